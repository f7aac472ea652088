//! The wire form of expressions: a flat, non-recursive node list, and the
//! limits every expression obeys.
//!
//! [`Expr`] is recursive in memory, but nothing recursive crosses the wire:
//! a [`Step`](crate::Step) carries its expression as [`ExprNode`]s in
//! post-order (children before their parent, each child index smaller than
//! its parent's, the root last, every node but the root used exactly once),
//! through the rkyv "with" wrapper [`FlatExpr`]. Validating the archive
//! (bytecheck) is therefore a loop over a vector, whatever a peer sends; the
//! node list is checked iteratively against [`MAX_EXPR_NODES`] and
//! [`MAX_EXPR_DEPTH`] and only then turned into an `Expr`. Everything that
//! recurses over an `Expr` (type checking, evaluation, display, drop) thus
//! sees at most `MAX_EXPR_DEPTH` levels; [`check_expr`] checks an `Expr`
//! built in-process (by the Rust API) the same way, without recursion.

use rkyv::rancor::{Fallible, Source};
use rkyv::ser::{Allocator, Writer};
use rkyv::vec::{ArchivedVec, VecResolver};
use rkyv::with::{ArchiveWith, DeserializeWith, SerializeWith};
use rkyv::{Archive, Deserialize, Place, Serialize};

use crate::{BinaryOp, CastType, DatePart, Expr, Literal, PlanError, TruncUnit};

/// Deepest expression accepted (a column or literal alone is depth 1).
pub const MAX_EXPR_DEPTH: usize = 128;
/// Most nodes (columns, literals, operators) in one expression.
pub const MAX_EXPR_NODES: usize = 10_000;

/// One node of a flat expression; children are indices of earlier nodes.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum ExprNode {
    Column(String),
    Literal(Literal),
    Binary { op: BinaryOp, left: u32, right: u32 },
    Negate(u32),
    Not(u32),
    IsNull(u32),
    IsNotNull(u32),
    Coalesce(Vec<u32>),
    Cast { expr: u32, to: CastType },
    DateTrunc { unit: TruncUnit, expr: u32 },
    DatePart { part: DatePart, expr: u32 },
}

fn limit_error(nodes: usize, depth: usize) -> Option<PlanError> {
    if nodes > MAX_EXPR_NODES {
        return Some(PlanError(format!(
            "expression has more than {MAX_EXPR_NODES} nodes (the limit on expression size)"
        )));
    }
    if depth > MAX_EXPR_DEPTH {
        return Some(PlanError(format!(
            "expression is nested more than {MAX_EXPR_DEPTH} levels deep (the limit on expression depth)"
        )));
    }
    None
}

/// The direct children of an expression, left to right.
pub fn children(expr: &Expr) -> Vec<&Expr> {
    match expr {
        Expr::Column(_) | Expr::Literal(_) => Vec::new(),
        Expr::Binary { left, right, .. } => vec![left, right],
        Expr::Negate(e) | Expr::Not(e) | Expr::IsNull(e) | Expr::IsNotNull(e) => vec![e],
        Expr::Coalesce(args) => args.iter().collect(),
        Expr::Cast { expr, .. } | Expr::DateTrunc { expr, .. } | Expr::DatePart { expr, .. } => {
            vec![expr]
        }
    }
}

/// Check an expression against [`MAX_EXPR_NODES`] and [`MAX_EXPR_DEPTH`]
/// without recursion (an expression built in-process may be arbitrarily deep).
pub fn check_expr(expr: &Expr) -> Result<(), PlanError> {
    let mut stack = vec![(expr, 1usize)];
    let mut nodes = 0usize;
    while let Some((e, depth)) = stack.pop() {
        nodes += 1;
        if let Some(error) = limit_error(nodes, depth) {
            return Err(error);
        }
        for c in children(e) {
            stack.push((c, depth + 1));
        }
    }
    Ok(())
}

/// The flat form of an expression (post-order, root last), built without
/// recursion. Limits are not checked here: the receiver checks them.
pub fn flatten(expr: &Expr) -> Vec<ExprNode> {
    let mut out: Vec<ExprNode> = Vec::new();
    // Indices of emitted nodes whose parent is not emitted yet.
    let mut done: Vec<u32> = Vec::new();
    // (node, whether its children were pushed already)
    let mut stack: Vec<(&Expr, bool)> = vec![(expr, false)];
    while let Some((e, expanded)) = stack.pop() {
        let kids = children(e);
        if !expanded && !kids.is_empty() {
            stack.push((e, true));
            for c in kids.into_iter().rev() {
                stack.push((c, false));
            }
            continue;
        }
        let args = done.split_off(done.len() - kids.len());
        let node = match e {
            Expr::Column(c) => ExprNode::Column(c.clone()),
            Expr::Literal(l) => ExprNode::Literal(l.clone()),
            Expr::Binary { op, .. } => ExprNode::Binary {
                op: *op,
                left: args[0],
                right: args[1],
            },
            Expr::Negate(_) => ExprNode::Negate(args[0]),
            Expr::Not(_) => ExprNode::Not(args[0]),
            Expr::IsNull(_) => ExprNode::IsNull(args[0]),
            Expr::IsNotNull(_) => ExprNode::IsNotNull(args[0]),
            Expr::Coalesce(_) => ExprNode::Coalesce(args),
            Expr::Cast { to, .. } => ExprNode::Cast {
                expr: args[0],
                to: *to,
            },
            Expr::DateTrunc { unit, .. } => ExprNode::DateTrunc {
                unit: *unit,
                expr: args[0],
            },
            Expr::DatePart { part, .. } => ExprNode::DatePart {
                part: *part,
                expr: args[0],
            },
        };
        done.push(out.len() as u32);
        out.push(node);
    }
    out
}

/// Rebuild an expression from its flat form, checking the form (children
/// before parents, each node used once, the root last) and the limits
/// first, without recursion.
pub fn unflatten(nodes: &[ExprNode]) -> Result<Expr, PlanError> {
    if nodes.is_empty() {
        return Err(PlanError("empty expression".into()));
    }
    if let Some(error) = limit_error(nodes.len(), 0) {
        return Err(error);
    }
    let mut slots: Vec<Option<(Expr, usize)>> = Vec::with_capacity(nodes.len());
    for (i, node) in nodes.iter().enumerate() {
        let mut take = |c: u32| -> Result<(Box<Expr>, usize), PlanError> {
            let c = c as usize;
            if c >= i {
                return Err(PlanError(format!(
                    "expression node {i} refers to node {c}, which does not come before it"
                )));
            }
            match slots[c].take() {
                Some((e, d)) => Ok((Box::new(e), d)),
                None => Err(PlanError(format!("expression node {c} is used twice"))),
            }
        };
        let (expr, depth) = match node {
            ExprNode::Column(c) => (Expr::Column(c.clone()), 0),
            ExprNode::Literal(l) => (Expr::Literal(l.clone()), 0),
            ExprNode::Binary { op, left, right } => {
                let (l, dl) = take(*left)?;
                let (r, dr) = take(*right)?;
                (
                    Expr::Binary {
                        op: *op,
                        left: l,
                        right: r,
                    },
                    dl.max(dr),
                )
            }
            ExprNode::Negate(c) => take(*c).map(|(e, d)| (Expr::Negate(e), d))?,
            ExprNode::Not(c) => take(*c).map(|(e, d)| (Expr::Not(e), d))?,
            ExprNode::IsNull(c) => take(*c).map(|(e, d)| (Expr::IsNull(e), d))?,
            ExprNode::IsNotNull(c) => take(*c).map(|(e, d)| (Expr::IsNotNull(e), d))?,
            ExprNode::Coalesce(args) => {
                let mut out = Vec::with_capacity(args.len().min(nodes.len()));
                let mut depth = 0;
                for a in args {
                    let (e, d) = take(*a)?;
                    out.push(*e);
                    depth = depth.max(d);
                }
                (Expr::Coalesce(out), depth)
            }
            ExprNode::Cast { expr, to } => {
                take(*expr).map(|(e, d)| (Expr::Cast { expr: e, to: *to }, d))?
            }
            ExprNode::DateTrunc { unit, expr } => take(*expr).map(|(e, d)| {
                (
                    Expr::DateTrunc {
                        unit: *unit,
                        expr: e,
                    },
                    d,
                )
            })?,
            ExprNode::DatePart { part, expr } => take(*expr).map(|(e, d)| {
                (
                    Expr::DatePart {
                        part: *part,
                        expr: e,
                    },
                    d,
                )
            })?,
        };
        let depth = depth + 1;
        if let Some(error) = limit_error(0, depth) {
            // Drop what was built so far without recursion depth beyond the limit.
            return Err(error);
        }
        slots.push(Some((expr, depth)));
    }
    let root = slots.pop().flatten();
    if let Some(unused) = slots.iter().position(Option::is_some) {
        return Err(PlanError(format!(
            "expression node {unused} is not part of the expression"
        )));
    }
    root.map(|(e, _)| e)
        .ok_or_else(|| PlanError("empty expression".into()))
}

/// rkyv "with" wrapper: archive an [`Expr`] as its flat node list, and check
/// it (form and limits) when deserializing.
pub struct FlatExpr;

/// Resolver of a [`FlatExpr`].
pub struct FlatExprResolver {
    len: usize,
    inner: VecResolver,
}

impl ArchiveWith<Expr> for FlatExpr {
    type Archived = ArchivedVec<ArchivedExprNode>;
    type Resolver = FlatExprResolver;

    fn resolve_with(_: &Expr, resolver: Self::Resolver, out: Place<Self::Archived>) {
        ArchivedVec::resolve_from_len(resolver.len, resolver.inner, out);
    }
}

impl<S> SerializeWith<Expr, S> for FlatExpr
where
    S: Fallible + Allocator + Writer + ?Sized,
    S::Error: Source,
{
    fn serialize_with(field: &Expr, serializer: &mut S) -> Result<Self::Resolver, S::Error> {
        let nodes = flatten(field);
        let inner = ArchivedVec::<ArchivedExprNode>::serialize_from_slice(&nodes, serializer)?;
        Ok(FlatExprResolver {
            len: nodes.len(),
            inner,
        })
    }
}

impl<D> DeserializeWith<ArchivedVec<ArchivedExprNode>, Expr, D> for FlatExpr
where
    D: Fallible + ?Sized,
    D::Error: Source,
{
    fn deserialize_with(
        field: &ArchivedVec<ArchivedExprNode>,
        deserializer: &mut D,
    ) -> Result<Expr, D::Error> {
        if let Some(error) = limit_error(field.len(), 0) {
            return Err(D::Error::new(error));
        }
        let mut nodes = Vec::with_capacity(field.len());
        for node in field.iter() {
            nodes.push(node.deserialize(deserializer)?);
        }
        unflatten(&nodes).map_err(D::Error::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{col, lit};

    fn deep_negate(n: usize) -> Vec<ExprNode> {
        let mut nodes = vec![ExprNode::Column("x".into())];
        for i in 0..n {
            nodes.push(ExprNode::Negate(i as u32));
        }
        nodes
    }

    #[test]
    fn flat_form_roundtrips() {
        let e = Expr::Coalesce(vec![
            (col("a") + lit(1)) * -col("b"),
            col("c").cast(CastType::Float64),
            lit(2.5),
        ])
        .gt(lit(0))
        .and(!col("d").is_null());
        let nodes = flatten(&e);
        assert_eq!(unflatten(&nodes).unwrap(), e);
        check_expr(&e).unwrap();
    }

    #[test]
    fn limits_are_clear_errors() {
        assert!(unflatten(&deep_negate(MAX_EXPR_DEPTH - 1)).is_ok());
        let e = unflatten(&deep_negate(MAX_EXPR_DEPTH)).unwrap_err().0;
        assert!(e.contains("128 levels"), "{e}");
        let e = unflatten(&deep_negate(100_000)).unwrap_err().0;
        assert!(e.contains("10000 nodes"), "{e}");
        // Wide but shallow: too many nodes.
        let mut wide: Vec<ExprNode> = (0..MAX_EXPR_NODES)
            .map(|_| ExprNode::Literal(Literal::Int(1)))
            .collect();
        wide.push(ExprNode::Coalesce((0..MAX_EXPR_NODES as u32).collect()));
        assert!(unflatten(&wide).unwrap_err().0.contains("nodes"));
    }

    #[test]
    fn malformed_flat_forms_are_errors() {
        let bad = [
            vec![],
            vec![ExprNode::Negate(0)],
            vec![ExprNode::Negate(5), ExprNode::Column("x".into())],
            // A node used twice (a DAG would expand exponentially).
            vec![
                ExprNode::Column("x".into()),
                ExprNode::Binary {
                    op: BinaryOp::Add,
                    left: 0,
                    right: 0,
                },
            ],
            // A node left over.
            vec![ExprNode::Column("x".into()), ExprNode::Column("y".into())],
        ];
        for nodes in bad {
            assert!(unflatten(&nodes).is_err(), "{nodes:?}");
        }
    }

    #[test]
    fn deep_in_process_expressions_are_checked_without_recursion() {
        let mut e = col("x");
        for _ in 0..200_000 {
            e = -e;
        }
        let err = check_expr(&e).unwrap_err().0;
        assert!(
            err.contains("10000 nodes") || err.contains("levels"),
            "{err}"
        );
        // Flattening is iterative too.
        assert_eq!(flatten(&e).len(), 200_001);
        // Dropping a deep Box chain recurses: leak it in this test.
        std::mem::forget(e);
    }
}
