//! Mergeable moments of a column ([`Moments`]: count, mean, M2, min, max): how one run of
//! values gives them (a corrected two-pass) and how two of them combine (Chan et al.'s
//! pairwise formula, [`Moments::merge`], the one place it is written). `describe` and the
//! group-by compute them per block, partition and worker, and merge them up to the
//! scheduler.

use rkyv::{Archive, Deserialize, Serialize};

/// Mergeable moments of one column over some rows (nulls and NaN skipped).
///
/// `m2` is the sum of squared deviations from `mean`. With `count == 0` the other fields
/// are meaningless (zero by default); use the `*_or_nan` accessors to report them.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Default)]
pub struct Moments {
    /// Number of non-null, non-NaN values.
    pub count: u64,
    /// Their mean.
    pub mean: f64,
    /// Sum of squared deviations from the mean.
    pub m2: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
}

impl Moments {
    /// Moments of a sequence of values (NaN skipped), by the corrected two-pass method.
    pub fn from_values(values: &[f64]) -> Moments {
        let mut acc = PassOne::default();
        for &x in values {
            acc.push(x);
        }
        let mut two = acc.second_pass();
        for &x in values {
            two.push(x);
        }
        two.finish()
    }

    /// Combine with another partition's moments (Chan et al.). Empty (count 0) is the
    /// identity; min/max of an empty Moments are ignored.
    pub fn merge(&mut self, other: &Moments) {
        if other.count == 0 {
            return;
        }
        if self.count == 0 {
            *self = *other;
            return;
        }
        let na = self.count as f64;
        let nb = other.count as f64;
        let n = na + nb;
        let delta = other.mean - self.mean;
        self.mean += delta * (nb / n);
        self.m2 += other.m2 + delta * delta * (na * (nb / n));
        self.count = self.count.saturating_add(other.count);
        if other.min < self.min {
            self.min = other.min;
        }
        if other.max > self.max {
            self.max = other.max;
        }
    }

    /// Sample variance (ddof = 1); None when count < 2.
    pub fn variance(&self) -> Option<f64> {
        (self.count >= 2).then(|| self.m2 / (self.count - 1) as f64)
    }

    /// Sample standard deviation (ddof = 1); None when count < 2.
    pub fn std(&self) -> Option<f64> {
        self.variance().map(f64::sqrt)
    }

    /// The mean, or NaN when count is 0.
    pub fn mean_or_nan(&self) -> f64 {
        if self.count == 0 {
            f64::NAN
        } else {
            self.mean
        }
    }

    /// The sample standard deviation, or NaN when count < 2 (as pandas).
    pub fn std_or_nan(&self) -> f64 {
        self.std().unwrap_or(f64::NAN)
    }

    /// The minimum, or NaN when count is 0.
    pub fn min_or_nan(&self) -> f64 {
        if self.count == 0 {
            f64::NAN
        } else {
            self.min
        }
    }

    /// The maximum, or NaN when count is 0.
    pub fn max_or_nan(&self) -> f64 {
        if self.count == 0 {
            f64::NAN
        } else {
            self.max
        }
    }
}

/// First pass of the two-pass moments: count, sum, min, max.
#[derive(Default)]
struct PassOne {
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
}

impl PassOne {
    #[inline]
    fn push(&mut self, x: f64) {
        if x.is_nan() {
            return;
        }
        if self.count == 0 {
            self.min = x;
            self.max = x;
        } else {
            if x < self.min {
                self.min = x;
            }
            if x > self.max {
                self.max = x;
            }
        }
        self.count += 1;
        self.sum += x;
    }

    fn second_pass(&self) -> PassTwo {
        let mean = if self.count == 0 {
            0.0
        } else {
            self.sum / self.count as f64
        };
        PassTwo {
            first: PassOne {
                count: self.count,
                sum: self.sum,
                min: self.min,
                max: self.max,
            },
            mean,
            sd: 0.0,
            sdd: 0.0,
        }
    }
}

/// Second pass: deviations from the first-pass mean.
struct PassTwo {
    first: PassOne,
    mean: f64,
    sd: f64,
    sdd: f64,
}

impl PassTwo {
    #[inline]
    fn push(&mut self, x: f64) {
        if x.is_nan() {
            return;
        }
        let d = x - self.mean;
        self.sd += d;
        self.sdd += d * d;
    }

    fn finish(self) -> Moments {
        let n = self.first.count;
        if n == 0 {
            return Moments::default();
        }
        let nf = n as f64;
        let mut m2 = self.sdd - self.sd * (self.sd / nf);
        if m2 < 0.0 {
            m2 = 0.0;
        }
        let mut mean = self.mean + self.sd / nf;
        if !mean.is_finite() {
            // Infinite values: the refinement is meaningless; keep the plain sum / n.
            mean = self.mean;
        }
        Moments {
            count: n,
            mean,
            m2,
            min: self.first.min,
            max: self.first.max,
        }
    }
}
