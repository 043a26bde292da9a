//! Parsing and expansion of `#[pagegen::route]`.
//!
//! Values are checked by plain `&str -> Result<_, String>` functions ([`parse_duration_ns`],
//! [`parse_bytes`], [`parse_bytes_per_sec`], …) so they can be unit-tested without a compiler;
//! [`expand`] turns each `Err` into a `compile_error!` at the offending token.
//!
//! Quantities are parsed exactly (integer arithmetic on the digits, no `f64`), so `"0.3ms"` is
//! 300 000 ns, not 299 999; a value that is not a whole number of the base unit (`"1.5ns"`,
//! `"1.1KiB"`) is rejected with the nearest smaller spelling rather than silently rounded.

use proc_macro2::{Literal, Span, TokenStream};
use quote::{format_ident, quote, ToTokens};
use syn::ext::IdentExt;
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{Expr, ExprLit, FnArg, ItemFn, Lit, LitStr, MetaNameValue, Token};

const PLACEMENT: &str = "#[pagegen::route] goes on an `async fn` handler";

/// The keys, in the order the "expected ..." message lists them.
const KEYS: &[&str] = &[
    "class", "path", "cpu", "mem", "io_ops", "io_depth", "io_bw", "timeout", "pool",
];

/// A unit table: spelling, multiplier to the base unit.
type Units = &'static [(&'static str, u128)];

/// Duration units, to nanoseconds. `µs` is accepted both as U+00B5 (micro sign, what most
/// keyboards type) and U+03BC (Greek mu): they look the same, and an error over an invisible
/// difference would be a poor one.
const DURATION_UNITS: Units = &[
    ("ns", 1),
    ("us", 1_000),
    ("µs", 1_000),
    ("μs", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
];

/// Size units, to bytes: binary prefixes are powers of 1024, decimal ones powers of 1000.
const SIZE_UNITS: Units = &[
    ("B", 1),
    ("KiB", 1 << 10),
    ("MiB", 1 << 20),
    ("GiB", 1 << 30),
    ("TiB", 1 << 40),
    ("KB", 1_000),
    ("MB", 1_000_000),
    ("GB", 1_000_000_000),
];

/// One kind of quantity: its units and how messages spell them.
struct Quantity {
    units: Units,
    /// The units as a message lists them (`µs`'s second spelling left out).
    listed: &'static str,
    /// Name of the base unit, plural (`nanoseconds`).
    base_name: &'static str,
    /// Spelling of the base unit (`ns`).
    base: &'static str,
    /// Unit used in examples (`ms`).
    example_unit: &'static str,
    /// Appended to every unit in messages (`/s` for a rate).
    suffix: &'static str,
}

const DURATION: Quantity = Quantity {
    units: DURATION_UNITS,
    listed: "ns, us, ms or s",
    base_name: "nanoseconds",
    base: "ns",
    example_unit: "ms",
    suffix: "",
};

const SIZE: Quantity = Quantity {
    units: SIZE_UNITS,
    listed: "B, KiB, MiB, GiB, TiB, KB, MB or GB",
    base_name: "bytes",
    base: "B",
    example_unit: "MiB",
    suffix: "",
};

const RATE: Quantity = Quantity {
    units: SIZE_UNITS,
    listed: "B/s, KiB/s, MiB/s, GiB/s, TiB/s, KB/s, MB/s or GB/s",
    base_name: "bytes per second",
    base: "B",
    example_unit: "MiB",
    suffix: "/s",
};

/// Most digits accepted after the decimal point: 10^18 × the largest multiplier still fits a
/// `u128`, and no unit here has a meaningful 19th decimal.
const MAX_DECIMALS: usize = 18;

/// `key = "value"` as the user wrote it, for messages.
fn shown(key: &str, s: &str) -> String {
    format!("`{key} = {s:?}`")
}

/// Parses `"<number><unit>"` (number integer or decimal, optional whitespace before the unit) into
/// a whole, positive count of the quantity's base unit.
fn parse_quantity(key: &str, s: &str, q: &Quantity) -> Result<u64, String> {
    let lit = shown(key, s);
    let example = |n: &str| format!("\"{n}{}{}\"", q.example_unit, q.suffix);
    let num_len = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, rest) = s.split_at(num_len);
    if num.is_empty() {
        return Err(format!(
            "{lit} needs a number before the unit, e.g. {}",
            example("20")
        ));
    }
    let (int, frac) = match num.split_once('.') {
        None => (num, ""),
        Some((i, f)) if !i.is_empty() && !f.is_empty() && !f.contains('.') => (i, f),
        Some(_) => {
            return Err(format!(
                "`{num}` in {lit} is not a number: write digits with at most one decimal point, \
                 e.g. {} or {}",
                example("20"),
                example("1.5")
            ))
        }
    };
    let unit = rest.trim_start();
    if unit.is_empty() {
        return Err(format!(
            "{lit} needs a unit: use {}, e.g. {}",
            q.listed,
            example(num)
        ));
    }
    let Some(&(_, mult)) = q.units.iter().find(|(u, _)| *u == unit) else {
        let unit_shown = format!("{unit}{}", q.suffix);
        return Err(
            match q.units.iter().find(|(u, _)| u.eq_ignore_ascii_case(unit)) {
                Some((u, _)) => format!(
                "unknown unit `{unit_shown}` in {lit}: units are case-sensitive, write `{u}{}`, \
                 e.g. \"{num}{u}{}\"",
                q.suffix, q.suffix
            ),
                None => format!(
                    "unknown unit `{unit_shown}` in {lit}: use {}, e.g. {}",
                    q.listed,
                    example(num)
                ),
            },
        );
    };
    let too_large = || format!("{lit} is too large: at most {} {}", u64::MAX, q.base_name);
    if frac.len() > MAX_DECIMALS {
        return Err(format!(
            "{lit} has more than {MAX_DECIMALS} digits after the decimal point: drop some"
        ));
    }
    // Exact: value = (int · 10^d + frac) · mult / 10^d.
    let scale = 10u128.pow(frac.len() as u32);
    let int: u128 = int.parse().map_err(|_| too_large())?;
    let frac: u128 = if frac.is_empty() {
        0
    } else {
        frac.parse().map_err(|_| too_large())?
    };
    let scaled = int
        .checked_mul(scale)
        .and_then(|v| v.checked_add(frac))
        .and_then(|v| v.checked_mul(mult))
        .ok_or_else(too_large)?;
    if scaled == 0 {
        return Err(format!(
            "{lit} must be more than zero: leave `{key}` out to set none"
        ));
    }
    let whole = scaled / scale;
    if scaled % scale != 0 {
        return Err(if whole == 0 {
            format!(
                "{lit} is less than \"1{}{}\", the smallest value",
                q.base, q.suffix
            )
        } else {
            format!(
                "{lit} is not a whole number of {}: use a smaller unit, e.g. \"{whole}{}{}\"",
                q.base_name, q.base, q.suffix
            )
        });
    }
    u64::try_from(whole).map_err(|_| too_large())
}

/// `cpu`, `timeout`: `"20ms"` → 20 000 000 ns.
pub(crate) fn parse_duration_ns(key: &str, s: &str) -> Result<u64, String> {
    parse_quantity(key, s, &DURATION)
}

/// `mem`: `"64MiB"` → 67 108 864 bytes.
pub(crate) fn parse_bytes(key: &str, s: &str) -> Result<u64, String> {
    parse_quantity(key, s, &SIZE)
}

/// `io_bw`: `"50MiB/s"` → 52 428 800 bytes per second.
pub(crate) fn parse_bytes_per_sec(key: &str, s: &str) -> Result<u64, String> {
    match s.rsplit_once('/') {
        Some((amount, "s")) => parse_quantity(key, amount, &RATE).map_err(|e| {
            // Messages quote the whole value, not the part before "/s".
            e.replace(&shown(key, amount), &shown(key, s))
        }),
        Some((amount, per)) => Err(format!(
            "{} is not per second: write `/s` instead of `/{per}`, e.g. \"{}/s\"",
            shown(key, s),
            amount.trim_end()
        )),
        None => Err(format!(
            "{} is a rate: add \"/s\", e.g. \"{s}/s\"",
            shown(key, s)
        )),
    }
}

/// `pool`: `"latency"` → 0, `"bulk"` → 1.
pub(crate) fn parse_pool(key: &str, s: &str) -> Result<u8, String> {
    match s {
        "latency" => Ok(0),
        "bulk" => Ok(1),
        _ => Err(format!(
            "unknown pool in {}: use \"latency\" or \"bulk\"",
            shown(key, s)
        )),
    }
}

/// `class`: any non-blank name.
pub(crate) fn parse_class(key: &str, s: &str) -> Result<String, String> {
    if s.trim().is_empty() {
        Err(format!(
            "{} is empty: name the class, e.g. `class = \"search\"`, or leave `class` out to \
             use the route's method and path",
            shown(key, s)
        ))
    } else {
        Ok(s.to_owned())
    }
}

/// `path`: the route's path as written in the router, so it starts with `/`.
pub(crate) fn parse_path(key: &str, s: &str) -> Result<String, String> {
    if s.starts_with('/') {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "{} must start with '/', as in the router: `path = \"/{}\"`",
            shown(key, s),
            s.trim_start()
        ))
    }
}

/// The parsed arguments: `Some` where given and valid.
#[derive(Default)]
struct Annotation {
    class: Option<String>,
    path: Option<String>,
    cpu_ns: Option<u64>,
    mem_bytes: Option<u64>,
    io_ops: Option<u32>,
    io_depth: Option<u32>,
    io_bytes_per_sec: Option<u64>,
    timeout_ns: Option<u64>,
    pool: Option<u8>,
}

/// The value as a string literal, or an error at it saying what to write.
fn str_value<'a>(key: &str, value: &'a Expr, example: &str) -> syn::Result<&'a LitStr> {
    match value {
        Expr::Lit(ExprLit {
            lit: Lit::Str(s), ..
        }) => Ok(s),
        other => Err(syn::Error::new(
            other.span(),
            format!("`{key}` takes a string literal, e.g. `{key} = {example}`"),
        )),
    }
}

/// The value as an integer literal ≥ 1 that fits a `u32`.
fn count_value(key: &str, value: &Expr) -> syn::Result<u32> {
    let Expr::Lit(ExprLit {
        lit: Lit::Int(i), ..
    }) = value
    else {
        return Err(syn::Error::new(
            value.span(),
            format!("`{key}` takes an integer literal ≥ 1, e.g. `{key} = 8`"),
        ));
    };
    match i.base10_parse::<u32>() {
        Ok(0) => Err(syn::Error::new(
            i.span(),
            format!("`{key}` must be at least 1: leave `{key}` out to set none"),
        )),
        Ok(n) => Ok(n),
        Err(_) => Err(syn::Error::new(
            i.span(),
            format!("`{key} = {i}` is too large: at most {}", u32::MAX),
        )),
    }
}

/// Checks one string-valued argument with `parse`, reporting at the literal.
fn string_arg<T>(
    key: &str,
    value: &Expr,
    example: &str,
    parse: impl FnOnce(&str, &str) -> Result<T, String>,
) -> syn::Result<T> {
    let lit = str_value(key, value, example)?;
    parse(key, &lit.value()).map_err(|msg| syn::Error::new(lit.span(), msg))
}

/// Parses the attribute's arguments; errors are collected, not returned, so every bad argument is
/// reported in one compile.
fn parse_args(args: TokenStream, errors: &mut Vec<syn::Error>) -> Annotation {
    let mut a = Annotation::default();
    let pairs = match Punctuated::<MetaNameValue, Token![,]>::parse_terminated.parse2(args) {
        Ok(p) => p,
        Err(e) => {
            errors.push(syn::Error::new(
                e.span(),
                format!(
                    "{e}: #[pagegen::route] takes `key = value` arguments, e.g. \
                     `#[pagegen::route(class = \"search\", cpu = \"20ms\")]`"
                ),
            ));
            return a;
        }
    };
    let mut seen: Vec<String> = Vec::new();
    for nv in pairs {
        let key = nv
            .path
            .get_ident()
            .map(|i| i.to_string())
            .unwrap_or_else(|| nv.path.to_token_stream().to_string());
        if !KEYS.contains(&key.as_str()) {
            errors.push(syn::Error::new(
                nv.path.span(),
                format!(
                    "unknown key `{key}` for #[pagegen::route]: expected class, path, cpu, mem, \
                     io_ops, io_depth, io_bw, timeout or pool"
                ),
            ));
            continue;
        }
        if seen.contains(&key) {
            errors.push(syn::Error::new(
                nv.path.span(),
                format!("`{key}` is given twice: keep one"),
            ));
            continue;
        }
        seen.push(key.clone());
        let v = &nv.value;
        let result = match key.as_str() {
            "class" => string_arg(&key, v, "\"search\"", parse_class).map(|c| a.class = Some(c)),
            "path" => string_arg(&key, v, "\"/search\"", parse_path).map(|p| a.path = Some(p)),
            "cpu" => string_arg(&key, v, "\"20ms\"", parse_duration_ns).map(|n| a.cpu_ns = Some(n)),
            "timeout" => {
                string_arg(&key, v, "\"2s\"", parse_duration_ns).map(|n| a.timeout_ns = Some(n))
            }
            "mem" => string_arg(&key, v, "\"64MiB\"", parse_bytes).map(|n| a.mem_bytes = Some(n)),
            "io_bw" => string_arg(&key, v, "\"50MiB/s\"", parse_bytes_per_sec)
                .map(|n| a.io_bytes_per_sec = Some(n)),
            "pool" => string_arg(&key, v, "\"latency\"", parse_pool).map(|n| a.pool = Some(n)),
            "io_ops" => count_value(&key, v).map(|n| a.io_ops = Some(n)),
            "io_depth" => count_value(&key, v).map(|n| a.io_depth = Some(n)),
            _ => unreachable!("KEYS lists every key matched here"),
        };
        if let Err(e) = result {
            errors.push(e);
        }
    }
    a
}

fn opt<T: ToTokens>(v: Option<T>) -> TokenStream {
    match v {
        Some(v) => quote! { ::core::option::Option::Some(#v) },
        None => quote! { ::core::option::Option::None },
    }
}

fn opt_str(v: Option<&String>) -> TokenStream {
    opt(v.map(|s| LitStr::new(s, Span::call_site())))
}

/// Expands the attribute; never fails. On any error the item comes back unchanged after the
/// `compile_error!`s, so the rest of the program keeps type-checking.
pub(crate) fn expand(args: TokenStream, item: TokenStream) -> TokenStream {
    let mut errors = Vec::new();
    let ann = parse_args(args, &mut errors);
    let func = match syn::parse2::<ItemFn>(item.clone()) {
        Ok(f) if f.sig.asyncness.is_none() => {
            errors.push(syn::Error::new(
                f.sig.fn_token.span(),
                format!("{PLACEMENT}: add the `async` keyword"),
            ));
            None
        }
        Ok(f) => {
            if let Some(FnArg::Receiver(r)) = f.sig.inputs.first() {
                errors.push(syn::Error::new(
                    r.span(),
                    format!(
                        "{PLACEMENT}, not a method: make it a free function, or describe the \
                         route with `pagegen::route::Route`"
                    ),
                ));
            }
            Some(f)
        }
        Err(_) => {
            errors.push(syn::Error::new_spanned(&item, PLACEMENT));
            None
        }
    };
    let mut func = match func {
        Some(f) if errors.is_empty() => f,
        _ => {
            let errors = errors.iter().map(syn::Error::to_compile_error);
            return quote! { #(#errors)* #item };
        }
    };

    let name = &func.sig.ident;
    let handler = LitStr::new(&name.unraw().to_string(), name.span());
    // `format_ident!` strips a raw identifier's `r#`.
    let static_name = format_ident!("__PAGEGEN_ROUTE_{}", name);
    let class = opt_str(ann.class.as_ref());
    let path = opt_str(ann.path.as_ref());
    let cpu_ns = opt(ann.cpu_ns.map(Literal::u64_suffixed));
    let mem_bytes = opt(ann.mem_bytes.map(Literal::u64_suffixed));
    let io_ops = opt(ann.io_ops.map(Literal::u32_suffixed));
    let io_depth = opt(ann.io_depth.map(Literal::u32_suffixed));
    let io_bytes_per_sec = opt(ann.io_bytes_per_sec.map(Literal::u64_suffixed));
    let timeout_ns = opt(ann.timeout_ns.map(Literal::u64_suffixed));
    let pool = opt(ann.pool.map(Literal::u8_suffixed));
    // A `#[cfg]` on the handler applies to its annotation too, or a configured-out handler would
    // leave an unused static (and a registered path with no handler) behind.
    let cfgs: Vec<_> = func
        .attrs
        .iter()
        .filter(|a| a.path().is_ident("cfg"))
        .collect();
    let submit = ann.path.is_some().then(|| {
        quote! {
            #(#cfgs)*
            ::pagegen::__private::inventory::submit! {
                ::pagegen::__private::RouteEntry(&#static_name)
            }
        }
    });

    // The call goes into the user's block rather than a new one: the block's braces keep their
    // spans, so the fn stays the user's item for lints (an unused handler still warns).
    func.block.stmts.insert(
        0,
        syn::parse_quote! { ::pagegen::__private::bind_route(&#static_name); },
    );
    quote! {
        #(#cfgs)*
        #[doc(hidden)]
        #[allow(non_upper_case_globals)]
        static #static_name: ::pagegen::__private::RouteAnnotation =
            ::pagegen::__private::RouteAnnotation {
                handler: #handler,
                class: #class,
                path: #path,
                cpu_ns: #cpu_ns,
                mem_bytes: #mem_bytes,
                io_ops: #io_ops,
                io_depth: #io_depth,
                io_bytes_per_sec: #io_bytes_per_sec,
                timeout_ns: #timeout_ns,
                pool: #pool,
            };
        #submit
        #func
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(r: Result<impl std::fmt::Debug, String>) -> String {
        r.expect_err("should be rejected")
    }

    #[test]
    fn durations_exact() {
        let d = |s| parse_duration_ns("cpu", s).unwrap();
        assert_eq!(d("20ms"), 20_000_000);
        assert_eq!(d("20 ms"), 20_000_000);
        assert_eq!(d("1ns"), 1);
        assert_eq!(d("7us"), 7_000);
        assert_eq!(d("7µs"), 7_000);
        assert_eq!(d("7μs"), 7_000);
        assert_eq!(d("2s"), 2_000_000_000);
        assert_eq!(d("0.3ms"), 300_000);
        assert_eq!(d("1.5s"), 1_500_000_000);
        assert_eq!(d("0.000000001s"), 1);
        assert_eq!(d("18446744073709551615ns"), u64::MAX);
        assert_eq!(d("18446744073.709551615s"), u64::MAX);
    }

    #[test]
    fn durations_rejected_with_what_to_write() {
        let e = |s| err(parse_duration_ns("cpu", s));
        assert_eq!(
            e("20mx"),
            "unknown unit `mx` in `cpu = \"20mx\"`: use ns, us, ms or s, e.g. \"20ms\""
        );
        assert_eq!(
            e("20MS"),
            "unknown unit `MS` in `cpu = \"20MS\"`: units are case-sensitive, write `ms`, \
             e.g. \"20ms\""
        );
        assert_eq!(
            e("20"),
            "`cpu = \"20\"` needs a unit: use ns, us, ms or s, e.g. \"20ms\""
        );
        assert_eq!(
            e("ms"),
            "`cpu = \"ms\"` needs a number before the unit, e.g. \"20ms\""
        );
        assert!(e("-5ms").contains("needs a number"));
        assert!(e(" 5ms").contains("needs a number"));
        assert!(e("1.2.3ms").contains("`1.2.3` in `cpu = \"1.2.3ms\"` is not a number"));
        assert!(e(".5ms").contains("is not a number"));
        assert!(e("5.ms").contains("is not a number"));
        assert_eq!(
            e("0ms"),
            "`cpu = \"0ms\"` must be more than zero: leave `cpu` out to set none"
        );
        assert!(e("0.0s").contains("must be more than zero"));
        assert_eq!(
            e("1.5ns"),
            "`cpu = \"1.5ns\"` is not a whole number of nanoseconds: use a smaller unit, \
             e.g. \"1ns\""
        );
        assert_eq!(
            e("0.5ns"),
            "`cpu = \"0.5ns\"` is less than \"1ns\", the smallest value"
        );
        assert!(e("18446744073709551616ns").contains("is too large"));
        assert!(e("99999999999999999999999999999999999999999s").contains("is too large"));
        assert!(e("1.0000000000000000001s").contains("digits after the decimal point"));
        assert!(e("5 ms ").contains("unknown unit `ms `"));
        assert!(e("5m").contains("unknown unit `m`"));
        assert!(err(parse_duration_ns("timeout", "2x")).contains("`timeout = \"2x\"`"));
    }

    #[test]
    fn sizes_exact() {
        let b = |s| parse_bytes("mem", s).unwrap();
        assert_eq!(b("1B"), 1);
        assert_eq!(b("64MiB"), 64 << 20);
        assert_eq!(b("64 MiB"), 64 << 20);
        assert_eq!(b("1KiB"), 1024);
        assert_eq!(b("1.5KiB"), 1536);
        assert_eq!(b("2GiB"), 2 << 30);
        assert_eq!(b("3TiB"), 3 << 40);
        assert_eq!(b("1KB"), 1_000);
        assert_eq!(b("64MB"), 64_000_000);
        assert_eq!(b("1.5GB"), 1_500_000_000);
        assert_eq!(b("16777215TiB"), 16_777_215 << 40);
    }

    #[test]
    fn sizes_rejected_with_what_to_write() {
        let e = |s| err(parse_bytes("mem", s));
        assert_eq!(
            e("64MX"),
            "unknown unit `MX` in `mem = \"64MX\"`: use B, KiB, MiB, GiB, TiB, KB, MB or GB, \
             e.g. \"64MiB\""
        );
        assert!(e("64mib").contains("units are case-sensitive, write `MiB`, e.g. \"64MiB\""));
        assert!(e("1TB").contains("unknown unit `TB`"));
        assert!(e("64").contains("needs a unit"));
        assert!(e("0MiB").contains("must be more than zero: leave `mem` out"));
        assert_eq!(
            e("1.1KiB"),
            "`mem = \"1.1KiB\"` is not a whole number of bytes: use a smaller unit, e.g. \"1126B\""
        );
        assert!(e("16777216TiB").contains("is too large: at most 18446744073709551615 bytes"));
    }

    #[test]
    fn bandwidth() {
        let bw = |s| parse_bytes_per_sec("io_bw", s);
        assert_eq!(bw("50MiB/s"), Ok(50 << 20));
        assert_eq!(bw("50 MiB/s"), Ok(50 << 20));
        assert_eq!(bw("1GB/s"), Ok(1_000_000_000));
        assert_eq!(bw("512B/s"), Ok(512));
        assert_eq!(
            bw("50MiB").unwrap_err(),
            "`io_bw = \"50MiB\"` is a rate: add \"/s\", e.g. \"50MiB/s\""
        );
        assert_eq!(
            bw("50MiB/ms").unwrap_err(),
            "`io_bw = \"50MiB/ms\"` is not per second: write `/s` instead of `/ms`, \
             e.g. \"50MiB/s\""
        );
        assert_eq!(
            bw("50MX/s").unwrap_err(),
            "unknown unit `MX/s` in `io_bw = \"50MX/s\"`: use B/s, KiB/s, MiB/s, GiB/s, TiB/s, \
             KB/s, MB/s or GB/s, e.g. \"50MiB/s\""
        );
        assert!(bw("50mib/s")
            .unwrap_err()
            .contains("write `MiB/s`, e.g. \"50MiB/s\""));
        assert_eq!(
            bw("0MiB/s").unwrap_err(),
            "`io_bw = \"0MiB/s\"` must be more than zero: leave `io_bw` out to set none"
        );
        assert!(bw("/s").unwrap_err().contains("needs a number"));
        assert!(bw("0.5B/s").unwrap_err().contains("is less than \"1B/s\""));
    }

    #[test]
    fn pool_class_path() {
        assert_eq!(parse_pool("pool", "latency"), Ok(0));
        assert_eq!(parse_pool("pool", "bulk"), Ok(1));
        assert_eq!(
            parse_pool("pool", "Bulk").unwrap_err(),
            "unknown pool in `pool = \"Bulk\"`: use \"latency\" or \"bulk\""
        );
        assert_eq!(parse_class("class", "search").as_deref(), Ok("search"));
        assert!(parse_class("class", " ").unwrap_err().contains("is empty"));
        assert_eq!(parse_path("path", "/search").as_deref(), Ok("/search"));
        assert_eq!(
            parse_path("path", "search").unwrap_err(),
            "`path = \"search\"` must start with '/', as in the router: `path = \"/search\"`"
        );
    }

    fn expanded(args: TokenStream, item: TokenStream) -> String {
        expand(args, item).to_string()
    }

    #[test]
    fn expands_every_field() {
        let out = expanded(
            quote! {
                class = "search", cpu = "20ms", mem = "64MiB", io_depth = 8, io_bw = "50MiB/s",
                timeout = "2s", path = "/search", io_ops = 3, pool = "bulk"
            },
            quote! {
                #[allow(unused)]
                pub(crate) async fn search<T: Send>(x: T) -> &'static str where T: Sync { "ok" }
            },
        );
        let want = quote! {
            #[doc(hidden)]
            #[allow(non_upper_case_globals)]
            static __PAGEGEN_ROUTE_search: ::pagegen::__private::RouteAnnotation =
                ::pagegen::__private::RouteAnnotation {
                    handler: "search",
                    class: ::core::option::Option::Some("search"),
                    path: ::core::option::Option::Some("/search"),
                    cpu_ns: ::core::option::Option::Some(20000000u64),
                    mem_bytes: ::core::option::Option::Some(67108864u64),
                    io_ops: ::core::option::Option::Some(3u32),
                    io_depth: ::core::option::Option::Some(8u32),
                    io_bytes_per_sec: ::core::option::Option::Some(52428800u64),
                    timeout_ns: ::core::option::Option::Some(2000000000u64),
                    pool: ::core::option::Option::Some(1u8),
                };
            ::pagegen::__private::inventory::submit! {
                ::pagegen::__private::RouteEntry(&__PAGEGEN_ROUTE_search)
            }
            #[allow(unused)]
            pub(crate) async fn search<T: Send>(x: T) -> &'static str where T: Sync {
                ::pagegen::__private::bind_route(&__PAGEGEN_ROUTE_search);
                "ok"
            }
        };
        assert_eq!(out, want.to_string());
    }

    #[test]
    fn no_path_no_submit_and_none_fields() {
        let out = expanded(quote! {}, quote! { async fn r#type() {} });
        assert!(!out.contains("submit"), "{out}");
        assert!(out.contains("static __PAGEGEN_ROUTE_type"), "{out}");
        assert!(out.contains("handler : \"type\""), "{out}");
        assert!(
            out.contains("cpu_ns : :: core :: option :: Option :: None"),
            "{out}"
        );
    }

    #[test]
    fn cfg_follows_the_handler() {
        let out = expanded(
            quote! { path = "/x" },
            quote! { #[cfg(feature = "x")] async fn x() {} },
        );
        assert_eq!(out.matches("# [cfg (feature = \"x\")]").count(), 3, "{out}");
    }

    #[test]
    fn errors_keep_the_item_unchanged() {
        let item = quote! { async fn search() -> &'static str { "ok" } };
        for args in [
            quote! { cpu = "20mx" },
            quote! { cpus = "20ms" },
            quote! { cpu = "20ms", cpu = "30ms" },
            quote! { cpu = 20 },
            quote! { io_depth = 0 },
            quote! { io_depth = 5000000000 },
            quote! { io_ops = "3" },
            quote! { "search" },
        ] {
            let out = expanded(args.clone(), item.clone());
            assert!(out.contains("compile_error"), "{args}: {out}");
            assert!(!out.contains("__PAGEGEN_ROUTE"), "{args}: {out}");
            assert!(out.ends_with(&item.to_string()), "{args}: {out}");
        }
        let out = expanded(quote! { cpus = "1", cpu = "x", mem = "0B" }, item);
        assert_eq!(out.matches("compile_error").count(), 3, "{out}");
    }

    #[test]
    fn placement_errors() {
        for item in [
            quote! { fn search() -> &'static str { "ok" } },
            quote! { struct S; },
            quote! { async fn m(&self) {} },
        ] {
            let out = expanded(quote! { cpu = "20ms" }, item.clone());
            assert!(out.contains("goes on an `async fn` handler"), "{out}");
            assert!(out.ends_with(&item.to_string()), "{out}");
        }
    }
}
