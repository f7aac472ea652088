//! SQL expression text to plan expressions, for the command line:
//! `--with-column "date=date_trunc('day', datetime)"`,
//! `--filter "temperature > 0 AND windSpeed IS NOT NULL"`.
//! Parsing is sqlparser's (generic dialect); this module only maps its AST
//! onto [`stratus_plan::Expr`] and refuses what the plan cannot express.

use sqlparser::ast::{
    BinaryOperator, CastKind, DataType as SqlType, Expr as SqlExpr, FunctionArg, FunctionArgExpr,
    FunctionArguments, UnaryOperator, Value,
};
use sqlparser::dialect::GenericDialect;
use sqlparser::parser::Parser;
use stratus_plan::{BinaryOp, CastType, DatePart, Expr, Literal, TruncUnit, MAX_EXPR_DEPTH};

/// Longest expression text accepted.
pub const MAX_SQL_CHARS: usize = 16 << 10;

/// Parse an SQL expression. Its text, the parser's recursion and the plan
/// expression's depth are bounded ([`MAX_SQL_CHARS`], [`MAX_EXPR_DEPTH`]),
/// so no input overflows the stack.
pub fn parse_expr(text: &str) -> Result<Expr, String> {
    if text.len() > MAX_SQL_CHARS {
        return Err(format!(
            "expression of {} characters exceeds the limit of {MAX_SQL_CHARS}",
            text.len()
        ));
    }
    let dialect = GenericDialect {};
    let mut parser = Parser::new(&dialect)
        .with_recursion_limit(MAX_EXPR_DEPTH)
        .try_with_sql(text)
        .map_err(|e| format!("cannot parse '{text}': {e}"))?;
    let ast = parser
        .parse_expr()
        .map_err(|e| format!("cannot parse '{text}': {e}"))?;
    let rest = parser.peek_token();
    if rest.token != sqlparser::tokenizer::Token::EOF {
        return Err(format!(
            "cannot parse '{text}': unexpected '{rest}' after the expression"
        ));
    }
    let expr = convert(&ast, 1).map_err(|e| format!("'{text}': {e}"))?;
    stratus_plan::check_expr(&expr).map_err(|e| format!("'{text}': {e}"))?;
    Ok(expr)
}

/// Parse `NAME=EXPR` (for `--with-column`).
pub fn parse_assignment(text: &str) -> Result<(String, Expr), String> {
    let (name, expr) = text
        .split_once('=')
        .ok_or_else(|| format!("'{text}': expected NAME=EXPRESSION"))?;
    let name = name.trim();
    if name.is_empty() || !name.chars().all(|c| c.is_alphanumeric() || c == '_') {
        return Err(format!("'{text}': '{name}' is not a column name"));
    }
    Ok((name.to_string(), parse_expr(expr)?))
}

fn convert(e: &SqlExpr, depth: usize) -> Result<Expr, String> {
    if depth > MAX_EXPR_DEPTH {
        return Err(format!(
            "expression is nested more than {MAX_EXPR_DEPTH} levels deep (the limit on expression depth)"
        ));
    }
    Ok(match e {
        SqlExpr::Identifier(id) => Expr::Column(id.value.clone()),
        SqlExpr::CompoundIdentifier(parts) => Expr::Column(
            parts
                .last()
                .map(|p| p.value.clone())
                .ok_or("empty identifier")?,
        ),
        SqlExpr::Value(v) => Expr::Literal(match &v.value {
            Value::Number(n, _) => match n.parse::<i64>() {
                Ok(i) => Literal::Int(i),
                Err(_) => Literal::Float(n.parse().map_err(|_| format!("bad number {n}"))?),
            },
            Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => Literal::Str(s.clone()),
            Value::Boolean(b) => Literal::Bool(*b),
            Value::Null => Literal::Null,
            other => return Err(format!("unsupported literal {other}")),
        }),
        SqlExpr::Nested(inner) => convert(inner, depth + 1)?,
        SqlExpr::UnaryOp { op, expr } => {
            let inner = convert(expr, depth + 1)?;
            match op {
                UnaryOperator::Minus => match inner {
                    Expr::Literal(Literal::Int(i)) => Expr::Literal(Literal::Int(-i)),
                    Expr::Literal(Literal::Float(x)) => Expr::Literal(Literal::Float(-x)),
                    other => Expr::Negate(Box::new(other)),
                },
                UnaryOperator::Plus => inner,
                UnaryOperator::Not => Expr::Not(Box::new(inner)),
                other => return Err(format!("unsupported operator {other}")),
            }
        }
        SqlExpr::BinaryOp { left, op, right } => {
            let op = match op {
                BinaryOperator::Plus => BinaryOp::Add,
                BinaryOperator::Minus => BinaryOp::Sub,
                BinaryOperator::Multiply => BinaryOp::Mul,
                BinaryOperator::Divide => BinaryOp::Div,
                BinaryOperator::Eq => BinaryOp::Eq,
                BinaryOperator::NotEq => BinaryOp::NotEq,
                BinaryOperator::Lt => BinaryOp::Lt,
                BinaryOperator::LtEq => BinaryOp::LtEq,
                BinaryOperator::Gt => BinaryOp::Gt,
                BinaryOperator::GtEq => BinaryOp::GtEq,
                BinaryOperator::And => BinaryOp::And,
                BinaryOperator::Or => BinaryOp::Or,
                other => return Err(format!("unsupported operator {other}")),
            };
            Expr::Binary {
                op,
                left: Box::new(convert(left, depth + 1)?),
                right: Box::new(convert(right, depth + 1)?),
            }
        }
        SqlExpr::IsNull(inner) => Expr::IsNull(Box::new(convert(inner, depth + 1)?)),
        SqlExpr::IsNotNull(inner) => Expr::IsNotNull(Box::new(convert(inner, depth + 1)?)),
        SqlExpr::Cast {
            kind: CastKind::Cast | CastKind::DoubleColon,
            expr,
            data_type,
            ..
        } => Expr::Cast {
            expr: Box::new(convert(expr, depth + 1)?),
            to: cast_type(data_type)?,
        },
        SqlExpr::Function(f) => {
            let name = f.name.to_string().to_lowercase();
            let args = match &f.args {
                FunctionArguments::List(list) => list
                    .args
                    .iter()
                    .map(|a| match a {
                        FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => convert(e, depth + 1),
                        other => Err(format!("unsupported argument {other}")),
                    })
                    .collect::<Result<Vec<_>, _>>()?,
                FunctionArguments::None => Vec::new(),
                FunctionArguments::Subquery(_) => return Err("subqueries are not supported".into()),
            };
            function(&name, args)?
        }
        other => return Err(format!("unsupported expression '{other}'")),
    })
}

fn function(name: &str, mut args: Vec<Expr>) -> Result<Expr, String> {
    let arity = |n: usize, args: &[Expr]| {
        if args.len() == n {
            Ok(())
        } else {
            Err(format!(
                "{name}() takes {n} argument(s), got {}",
                args.len()
            ))
        }
    };
    Ok(match name {
        "coalesce" => {
            if args.is_empty() {
                return Err("coalesce() needs arguments".into());
            }
            Expr::Coalesce(args)
        }
        "date_trunc" => {
            arity(2, &args)?;
            let value = args.pop().expect("two args");
            let unit = match args.pop().expect("two args") {
                Expr::Literal(Literal::Str(u)) => match u.to_lowercase().as_str() {
                    "day" => TruncUnit::Day,
                    "month" => TruncUnit::Month,
                    "year" => TruncUnit::Year,
                    other => {
                        return Err(format!(
                            "date_trunc unit '{other}' is not supported (day, month, year)"
                        ))
                    }
                },
                other => return Err(format!("date_trunc's unit must be a string, got {other}")),
            };
            Expr::DateTrunc {
                unit,
                expr: Box::new(value),
            }
        }
        "year" | "month" | "day" => {
            arity(1, &args)?;
            let part = match name {
                "year" => DatePart::Year,
                "month" => DatePart::Month,
                _ => DatePart::Day,
            };
            Expr::DatePart {
                part,
                expr: Box::new(args.pop().expect("one arg")),
            }
        }
        other => return Err(format!("unknown function {other}()")),
    })
}

fn cast_type(t: &SqlType) -> Result<CastType, String> {
    let name = t.to_string().to_lowercase();
    Ok(match name.as_str() {
        "int" | "integer" | "int4" => CastType::Int32,
        "bigint" | "int8" => CastType::Int64,
        "double" | "double precision" | "float" | "float8" | "real" => CastType::Float64,
        "varchar" | "text" | "string" => CastType::Utf8,
        "boolean" | "bool" => CastType::Boolean,
        "date" => CastType::Date32,
        "timestamp" => CastType::TimestampMicros,
        other => return Err(format!("cannot cast to {other}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use stratus_plan::{col, lit};

    #[test]
    fn deep_or_long_expressions_are_clear_errors() {
        let deep = format!("{}x{}", "(".repeat(5000), ")".repeat(5000));
        assert!(parse_expr(&deep).is_err());
        let negations = format!("{}x", "- ".repeat(5000));
        assert!(parse_expr(&negations).is_err());
        let chain = vec!["x"; 3000].join(" + ");
        let e = parse_expr(&chain).unwrap_err();
        assert!(e.contains("128 levels"), "{e}");
        let long = "x + ".repeat(10_000) + "x";
        assert!(parse_expr(&long).unwrap_err().contains("characters"));
        assert!(parse_expr(&vec!["x"; 100].join(" + ")).is_ok());
    }

    #[test]
    fn the_workflow_expressions() {
        assert_eq!(
            parse_assignment("date=date_trunc('day', datetime)").unwrap(),
            ("date".into(), col("datetime").floor(TruncUnit::Day))
        );
        assert_eq!(
            parse_assignment("temperature = temperature * 9 / 5 + 32")
                .unwrap()
                .1,
            col("temperature") * lit(9) / lit(5) + lit(32)
        );
        assert_eq!(
            parse_expr("temperature > -10.5 AND windSpeed IS NOT NULL").unwrap(),
            col("temperature")
                .gt(lit(-10.5))
                .and(col("windSpeed").is_not_null())
        );
        assert_eq!(
            parse_expr("coalesce(snowDepth, 0)").unwrap(),
            Expr::Coalesce(vec![col("snowDepth"), lit(0)])
        );
        assert_eq!(
            parse_expr("CAST(year AS DOUBLE)").unwrap(),
            col("year").cast(CastType::Float64)
        );
        assert_eq!(
            parse_expr("month(datetime)").unwrap(),
            col("datetime").part(DatePart::Month)
        );
    }

    #[test]
    fn errors_are_clear() {
        assert!(parse_expr("temperature +")
            .unwrap_err()
            .contains("cannot parse"));
        assert!(parse_expr("frobnicate(x)")
            .unwrap_err()
            .contains("unknown function frobnicate()"));
        assert!(parse_expr("date_trunc('week', d)")
            .unwrap_err()
            .contains("'week'"));
        assert!(parse_assignment("no equals sign")
            .unwrap_err()
            .contains("NAME=EXPRESSION"));
        assert!(parse_expr("a b").unwrap_err().contains("unexpected"));
    }
}
