//! Source and destination URLs: every form users write, parsed into one
//! [`Location`].
//!
//! | written | means |
//! |---|---|
//! | `data/isd`, `/data/isd`, `file:///data/isd` | a local path |
//! | `az://CONTAINER/PATH` (account from options or `AZURE_STORAGE_ACCOUNT_NAME`) | Azure Blob |
//! | `az://CONTAINER@ACCOUNT.blob.core.windows.net/PATH` | Azure Blob |
//! | `abfs[s]://CONTAINER@ACCOUNT.dfs.core.windows.net/PATH` | Azure Blob (ADLS Gen2 form) |
//! | `wasb[s]://CONTAINER@ACCOUNT.blob.core.windows.net/PATH` | Azure Blob (Spark's form) |
//! | `https://ACCOUNT.blob.core.windows.net/CONTAINER/PATH` | Azure Blob (the portal's form) |
//! | `s3://BUCKET/PATH`, `s3a://BUCKET/PATH` | S3 |
//!
//! `gs://` is refused, saying it is not supported yet; any other scheme is
//! refused naming the forms above.

use std::net::IpAddr;
use std::path::PathBuf;

/// An error naming the URL (or endpoint) at fault.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StorageError {
    #[error("'{url}': {what}")]
    Url { url: String, what: String },
    #[error("endpoint '{endpoint}' is refused: {what}")]
    Endpoint { endpoint: String, what: String },
    #[error("storage option '{key}': {what}")]
    Option { key: String, what: String },
}

fn bad(url: &str, what: impl Into<String>) -> StorageError {
    StorageError::Url {
        url: url.to_string(),
        what: what.into(),
    }
}

/// Where a dataset is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A path on the worker's file system.
    Local(PathBuf),
    /// A blob container; `account` is `None` when the URL does not say it
    /// (`az://CONTAINER/...`: options or the environment must).
    Azure {
        account: Option<String>,
        container: String,
        /// Path inside the container, no leading `/` (may hold a glob).
        key: String,
    },
    /// An S3 bucket.
    S3 { bucket: String, key: String },
}

impl Location {
    /// Parse a source or destination as users write it.
    pub fn parse(text: &str) -> Result<Location, StorageError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(bad(text, "empty path"));
        }
        let Some((scheme, rest)) = text.split_once("://") else {
            return Ok(Location::Local(PathBuf::from(text)));
        };
        match scheme.to_ascii_lowercase().as_str() {
            "file" => {
                if !rest.starts_with('/') {
                    return Err(bad(text, "file:// URLs need an absolute path (file:///data/isd)"));
                }
                Ok(Location::Local(PathBuf::from(rest)))
            }
            "az" | "azure" => {
                let (authority, key) = split_authority(text, rest)?;
                match authority.split_once('@') {
                    Some((container, host)) => azure_at(text, container, host, key),
                    None => Ok(Location::Azure {
                        account: None,
                        container: container_name(text, authority)?,
                        key,
                    }),
                }
            }
            "abfs" | "abfss" | "wasb" | "wasbs" => {
                let (authority, key) = split_authority(text, rest)?;
                let Some((container, host)) = authority.split_once('@') else {
                    return Err(bad(
                        text,
                        format!("{scheme}:// URLs name CONTAINER@ACCOUNT.dfs.core.windows.net (or .blob.)"),
                    ));
                };
                azure_at(text, container, host, key)
            }
            "https" | "http" => {
                if rest.contains('?') {
                    return Err(bad(
                        text,
                        "a query string (a SAS token?) does not belong in the URL, which the dashboard and runs show: pass it as --storage-option sas_token=...",
                    ));
                }
                let (host, path) = split_authority(text, rest)?;
                let account = azure_account(host).ok_or_else(|| {
                    bad(
                        text,
                        "only Azure Blob URLs (https://ACCOUNT.blob.core.windows.net/CONTAINER/PATH) are read over https; use s3:// for S3",
                    )
                })?;
                let (container, key) = path.split_once('/').unwrap_or((path.as_str(), ""));
                Ok(Location::Azure {
                    account: Some(account),
                    container: container_name(text, container)?,
                    key: key.to_string(),
                })
            }
            "s3" | "s3a" => {
                let (bucket, key) = split_authority(text, rest)?;
                if bucket.len() < 3 {
                    return Err(bad(text, "an S3 bucket name has at least 3 characters"));
                }
                Ok(Location::S3 {
                    bucket: bucket.to_string(),
                    key,
                })
            }
            "gs" | "gcs" => Err(bad(
                text,
                "Google Cloud Storage is not supported yet (Azure Blob and S3 are)",
            )),
            other => Err(bad(
                text,
                format!(
                    "unknown scheme '{other}://' (expected a path, file://, az://, abfs[s]://, wasb[s]://, https://ACCOUNT.blob.core.windows.net/, s3:// or s3a://)"
                ),
            )),
        }
    }

    /// The object key (path inside the container or bucket), if remote.
    pub fn key(&self) -> Option<&str> {
        match self {
            Location::Local(_) => None,
            Location::Azure { key, .. } | Location::S3 { key, .. } => Some(key),
        }
    }

    /// Whether this is on an object store (not the local file system).
    pub fn is_remote(&self) -> bool {
        !matches!(self, Location::Local(_))
    }
}

/// The URL of object `key` in the same place and the same spelling as
/// `url` (a URL [`Location::parse`] read as remote): `az://data/isd/*.parquet`
/// and `isd/year=2019/a.parquet` give `az://data/isd/year=2019/a.parquet`.
pub fn object_url(url: &str, key: &str) -> String {
    let url = url.trim();
    let base = match Location::parse(url) {
        Ok(location) => {
            let own = location.key().unwrap_or("");
            let cut = url.len() - own.len();
            let base = &url[..cut];
            if base.ends_with('/') {
                base.to_string()
            } else {
                format!("{base}/")
            }
        }
        Err(_) => format!("{}/", url.trim_end_matches('/')),
    };
    format!("{base}{key}")
}

/// `AUTHORITY/PATH` into the authority and the path (no leading `/`).
fn split_authority<'a>(url: &str, rest: &'a str) -> Result<(&'a str, String), StorageError> {
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    if authority.is_empty() {
        return Err(bad(url, "no container or bucket in the URL"));
    }
    if path.split('/').any(|segment| segment == "..") {
        return Err(bad(url, "'..' is not allowed in an object-store URL"));
    }
    Ok((authority, path.trim_start_matches('/').to_string()))
}

fn azure_at(url: &str, container: &str, host: &str, key: String) -> Result<Location, StorageError> {
    let account = azure_account(host).ok_or_else(|| {
        bad(
            url,
            format!(
                "'{host}' is not ACCOUNT.blob.core.windows.net or ACCOUNT.dfs.core.windows.net"
            ),
        )
    })?;
    Ok(Location::Azure {
        account: Some(account),
        container: container_name(url, container)?,
        key,
    })
}

/// The account of `ACCOUNT.blob.core.windows.net` / `ACCOUNT.dfs.core.windows.net`.
fn azure_account(host: &str) -> Option<String> {
    let host = host.to_ascii_lowercase();
    let account = host
        .strip_suffix(".blob.core.windows.net")
        .or_else(|| host.strip_suffix(".dfs.core.windows.net"))?;
    let valid = (3..=24).contains(&account.len())
        && account
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    valid.then(|| account.to_string())
}

/// Azure container names: 3-63 of `a-z0-9-`, starting with a letter or digit.
fn container_name(url: &str, name: &str) -> Result<String, StorageError> {
    let valid = (3..=63).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.contains("--");
    if valid {
        Ok(name.to_string())
    } else {
        Err(bad(
            url,
            format!("'{name}' is not a valid container name (3-63 of a-z, 0-9 and '-')"),
        ))
    }
}

/// Split a key (or path) into the literal prefix an object store can list
/// and the glob pattern after it: `ISDWeather/year=*/month=1/*.parquet` ->
/// (`ISDWeather/`, `Some("year=*/month=1/*.parquet")`). A key without glob
/// characters is all prefix.
pub fn split_glob(key: &str) -> (String, Option<String>) {
    let is_glob = |s: &str| s.contains(['*', '?', '[']);
    let mut prefix = String::new();
    let mut segments = key.split('/').peekable();
    while let Some(segment) = segments.next() {
        if is_glob(segment) {
            let rest: Vec<&str> = std::iter::once(segment).chain(segments).collect();
            return (prefix, Some(rest.join("/")));
        }
        prefix.push_str(segment);
        if segments.peek().is_some() {
            prefix.push('/');
        }
    }
    (prefix, None)
}

/// Refuse endpoints no request may reach, whatever the settings: cloud
/// metadata services and link-local addresses (an endpoint option is
/// client input). `endpoint` is a URL or a bare host.
pub fn forbidden_endpoint(endpoint: &str) -> Result<(), StorageError> {
    let refuse = |what: &str| {
        Err(StorageError::Endpoint {
            endpoint: endpoint.to_string(),
            what: what.to_string(),
        })
    };
    let host = match url::Url::parse(endpoint) {
        Ok(url) => match url.host() {
            Some(url::Host::Ipv4(ip)) => return check_ip(endpoint, IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => return check_ip(endpoint, IpAddr::V6(ip)),
            Some(url::Host::Domain(d)) => d.to_ascii_lowercase(),
            None => return refuse("no host"),
        },
        Err(_) => endpoint
            .trim()
            .trim_matches(['[', ']'])
            .to_ascii_lowercase(),
    };
    if let Ok(ip) = host.parse::<IpAddr>() {
        return check_ip(endpoint, ip);
    }
    let metadata_names = [
        "metadata.google.internal",
        "metadata",
        "instance-data",
        "instance-data.ec2.internal",
    ];
    if metadata_names.contains(&host.trim_end_matches('.')) {
        return refuse("a cloud metadata service is never a storage endpoint");
    }
    Ok(())
}

pub(crate) fn check_ip(endpoint: &str, ip: IpAddr) -> Result<(), StorageError> {
    let link_local = match ip {
        IpAddr::V4(v4) => v4.is_link_local() || v4.octets() == [100, 100, 100, 200],
        IpAddr::V6(v6) => {
            let s = v6.segments();
            (s[0] & 0xffc0) == 0xfe80
                || v6
                    == "fd00:ec2::254"
                        .parse::<std::net::Ipv6Addr>()
                        .expect("valid")
                || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_link_local())
        }
    };
    if link_local {
        return Err(StorageError::Endpoint {
            endpoint: endpoint.to_string(),
            what: "link-local and cloud metadata addresses are never storage endpoints".into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn azure(account: Option<&str>, container: &str, key: &str) -> Location {
        Location::Azure {
            account: account.map(str::to_string),
            container: container.into(),
            key: key.into(),
        }
    }

    #[test]
    fn every_azure_form_names_the_same_place() {
        let key = "ISDWeather/year=*/month=*/*.parquet";
        let expected = azure(Some("azureopendatastorage"), "isdweatherdatacontainer", key);
        for url in [
            "https://azureopendatastorage.blob.core.windows.net/isdweatherdatacontainer/ISDWeather/year=*/month=*/*.parquet",
            "wasbs://isdweatherdatacontainer@azureopendatastorage.blob.core.windows.net/ISDWeather/year=*/month=*/*.parquet",
            "abfss://isdweatherdatacontainer@azureopendatastorage.dfs.core.windows.net/ISDWeather/year=*/month=*/*.parquet",
            "az://isdweatherdatacontainer@azureopendatastorage.blob.core.windows.net/ISDWeather/year=*/month=*/*.parquet",
        ] {
            assert_eq!(Location::parse(url).unwrap(), expected, "{url}");
        }
        assert_eq!(
            Location::parse("az://isdweatherdatacontainer/ISDWeather").unwrap(),
            azure(None, "isdweatherdatacontainer", "ISDWeather")
        );
    }

    #[test]
    fn local_and_s3_forms() {
        assert_eq!(
            Location::parse("data/isd").unwrap(),
            Location::Local("data/isd".into())
        );
        assert_eq!(
            Location::parse("file:///data/isd").unwrap(),
            Location::Local("/data/isd".into())
        );
        for url in ["s3://noaa-isd/year=2019/", "s3a://noaa-isd/year=2019/"] {
            assert_eq!(
                Location::parse(url).unwrap(),
                Location::S3 {
                    bucket: "noaa-isd".into(),
                    key: "year=2019/".into()
                }
            );
        }
    }

    #[test]
    fn clear_refusals_name_the_url() {
        for (url, says) in [
            ("gs://bucket/x", "not supported yet"),
            ("ftp://host/x", "unknown scheme 'ftp://'"),
            ("https://example.com/x", "only Azure Blob URLs"),
            ("abfss://noaccount/x", "CONTAINER@ACCOUNT"),
            ("az://Bad_Container/x", "not a valid container name"),
            ("s3://ab/x", "at least 3 characters"),
            ("s3://bucket/a/../b", "'..' is not allowed"),
            ("file://relative", "absolute path"),
            (
                "wasbs://c0ntainer@evil.example.com/x",
                "is not ACCOUNT.blob",
            ),
        ] {
            let err = Location::parse(url).unwrap_err().to_string();
            assert!(err.contains(url) && err.contains(says), "{url}: {err}");
        }
    }

    #[test]
    fn object_urls_keep_the_spelling_of_the_source() {
        assert_eq!(
            object_url("az://data/isd/year=*/*.parquet", "isd/year=2019/a.parquet"),
            "az://data/isd/year=2019/a.parquet"
        );
        assert_eq!(
            object_url(
                "https://acct.blob.core.windows.net/data/isd/",
                "isd/a.parquet"
            ),
            "https://acct.blob.core.windows.net/data/isd/a.parquet"
        );
        assert_eq!(
            object_url("s3://bucket", "a/b.parquet"),
            "s3://bucket/a/b.parquet"
        );
        assert_eq!(
            object_url("s3://bucket/", "a/b.parquet"),
            "s3://bucket/a/b.parquet"
        );
        let sas = Location::parse("https://acct.blob.core.windows.net/data/x?sv=1&sig=2")
            .unwrap_err()
            .to_string();
        assert!(sas.contains("--storage-option sas_token"), "{sas}");
    }

    #[test]
    fn globs_split_at_the_first_wild_segment() {
        assert_eq!(
            split_glob("ISDWeather/year=*/month=1/*.parquet"),
            (
                "ISDWeather/".into(),
                Some("year=*/month=1/*.parquet".into())
            )
        );
        assert_eq!(
            split_glob("ISDWeather/year=2019/month=1/part-0.parquet"),
            ("ISDWeather/year=2019/month=1/part-0.parquet".into(), None)
        );
        assert_eq!(
            split_glob("*.parquet"),
            (String::new(), Some("*.parquet".into()))
        );
        assert_eq!(split_glob("d/"), ("d/".into(), None));
    }

    #[test]
    fn metadata_and_link_local_endpoints_are_never_reached() {
        for endpoint in [
            "http://169.254.169.254/latest/meta-data",
            "169.254.170.2",
            "http://[fd00:ec2::254]/",
            "http://[fe80::1]:80/",
            "http://metadata.google.internal/",
            "http://100.100.100.200/",
            "http://[::ffff:169.254.169.254]/",
        ] {
            assert!(forbidden_endpoint(endpoint).is_err(), "{endpoint} allowed");
        }
        for endpoint in [
            "http://127.0.0.1:10000/devstoreaccount1",
            "https://s3.eu-west-1.amazonaws.com",
            "http://10.1.0.8:9000",
        ] {
            forbidden_endpoint(endpoint).unwrap();
        }
    }
}
