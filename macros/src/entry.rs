//! Parsing and expansion of `#[pagegen::main]` / `#[pagegen::test]`.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned, ToTokens};
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{Expr, ExprLit, ItemFn, Lit, MetaNameValue, Token};

/// Which attribute is expanding.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Main,
    Test,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Main => "pagegen::main",
            Kind::Test => "pagegen::test",
        }
    }
}

/// The parsed arguments; errors are collected, not returned, so the item is always emitted.
struct Config {
    workers: Option<usize>,
    allocator: bool,
    errors: Vec<syn::Error>,
}

fn parse_args(args: TokenStream, kind: Kind) -> Config {
    let mut cfg = Config {
        workers: None,
        allocator: true,
        errors: Vec::new(),
    };
    let parsed = Punctuated::<MetaNameValue, Token![,]>::parse_terminated.parse2(args);
    let pairs = match parsed {
        Ok(p) => p,
        Err(e) => {
            cfg.errors.push(syn::Error::new(
                e.span(),
                format!(
                    "{e}: #[{}] takes `key = value` arguments, e.g. `workers = 4`",
                    kind.name()
                ),
            ));
            return cfg;
        }
    };
    let mut flavor_single = false;
    for nv in pairs {
        let key = nv
            .path
            .get_ident()
            .map(|i| i.to_string())
            .unwrap_or_default();
        match key.as_str() {
            "workers" | "worker_threads" => match int_lit(&nv.value) {
                Some(Ok(0)) => cfg.errors.push(syn::Error::new(
                    nv.value.span(),
                    "`workers` must be at least 1",
                )),
                Some(Ok(n)) => cfg.workers = Some(n),
                Some(Err(e)) => cfg.errors.push(e),
                None => cfg.errors.push(syn::Error::new(
                    nv.value.span(),
                    "`workers` takes an integer literal, e.g. `workers = 4`",
                )),
            },
            "allocator" => match &nv.value {
                Expr::Lit(ExprLit {
                    lit: Lit::Bool(b), ..
                }) if kind == Kind::Main => cfg.allocator = b.value,
                Expr::Lit(ExprLit {
                    lit: Lit::Bool(_), ..
                }) => cfg.errors.push(syn::Error::new(
                    nv.path.span(),
                    "`allocator` applies to #[pagegen::main] only: a test cannot install a global allocator",
                )),
                other => cfg.errors.push(syn::Error::new(
                    other.span(),
                    "`allocator` takes `true` or `false`",
                )),
            },
            "flavor" => match &nv.value {
                Expr::Lit(ExprLit {
                    lit: Lit::Str(s), ..
                }) if s.value() == "multi_thread" => {}
                Expr::Lit(ExprLit {
                    lit: Lit::Str(s), ..
                }) if s.value() == "current_thread" => flavor_single = true,
                other => cfg.errors.push(syn::Error::new(
                    other.span(),
                    "`flavor` takes \"multi_thread\" or \"current_thread\"",
                )),
            },
            _ => cfg.errors.push(syn::Error::new(
                nv.path.span(),
                format!(
                    "unknown argument `{}` for #[{}]; expected `workers`, `flavor`{}",
                    nv.path.to_token_stream(),
                    kind.name(),
                    if kind == Kind::Main { " or `allocator`" } else { "" }
                ),
            )),
        }
    }
    if flavor_single && cfg.workers.is_none() {
        cfg.workers = Some(1);
    }
    cfg
}

fn int_lit(e: &Expr) -> Option<syn::Result<usize>> {
    match e {
        Expr::Lit(ExprLit {
            lit: Lit::Int(i), ..
        }) => Some(i.base10_parse::<usize>()),
        _ => None,
    }
}

/// Expands the attribute; never fails (errors become `compile_error!`s next to the item).
pub(crate) fn expand(args: TokenStream, item: TokenStream, kind: Kind) -> TokenStream {
    let mut cfg = parse_args(args, kind);
    let mut func: ItemFn = match syn::parse2(item.clone()) {
        Ok(f) => f,
        Err(e) => {
            // Not a function: report and give the tokens back untouched.
            let err = e.to_compile_error();
            return quote! { #err #item };
        }
    };
    if func.sig.asyncness.is_none() {
        cfg.errors.push(syn::Error::new(
            func.sig.fn_token.span(),
            format!(
                "#[{}] needs an `async fn`: add the `async` keyword",
                kind.name()
            ),
        ));
        let errors = cfg.errors.iter().map(syn::Error::to_compile_error);
        return quote! { #(#errors)* #func };
    }
    if kind == Kind::Main && !func.sig.inputs.is_empty() {
        cfg.errors.push(syn::Error::new(
            func.sig.inputs.span(),
            "`main` takes no arguments",
        ));
    }
    let errors: Vec<TokenStream> = cfg
        .errors
        .iter()
        .map(syn::Error::to_compile_error)
        .collect();

    func.sig.asyncness = None;
    let body = &func.block;
    let span = body.span();
    let workers = match cfg.workers {
        Some(n) => quote! { ::core::option::Option::Some(#n) },
        None => quote! { ::core::option::Option::None },
    };
    let attrs = &func.attrs;
    let vis = &func.vis;
    let sig = &func.sig;
    let new_body = match kind {
        Kind::Main => quote_spanned! {span=>
            {
                ::pagegen::__private::init_main_env();
                let body = async move #body;
                ::pagegen::__private::main_runtime(#workers).block_on(body)
            }
        },
        Kind::Test => quote_spanned! {span=>
            {
                let body = async move #body;
                ::pagegen::__private::test_runtime(#workers).block_on(body)
            }
        },
    };
    let test_attr = match kind {
        Kind::Test => quote! { #[::core::prelude::v1::test] },
        Kind::Main => quote! {},
    };
    let allocator = if kind == Kind::Main && cfg.allocator {
        quote! { ::pagegen::__private::global_allocator!(); }
    } else {
        quote! {}
    };
    quote! {
        #(#errors)*
        #allocator
        #test_attr
        #(#attrs)*
        #vis #sig #new_body
    }
}
