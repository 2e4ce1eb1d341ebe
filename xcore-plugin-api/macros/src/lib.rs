//! `#[plugin]`: typed dispatch for XCore plugins. Use it through the SDK
//! (`xcore_plugin_sdk::plugin`), which documents it; this crate only expands it.
//!
//! On an `impl Plugin for T` block, it takes the methods marked `#[action]`,
//! `#[route(METHOD, "/path")]` or `#[on("pattern")]` out of the trait impl into an inherent
//! `impl T`, and writes the trait's `call` (a `match` on the action name that extracts
//! each argument with `FromCall` and turns the result into a reply with `IntoReply`) and
//! `actions` (the description table: names, kinds, routes, events, schemas, examples).

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as Tokens};
use quote::{quote, quote_spanned};
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{
    Attribute, Expr, ExprLit, FnArg, GenericArgument, Ident, ImplItem, ImplItemFn, ItemImpl, Lit, LitStr,
    Meta, PathArguments, ReturnType, Token, Type,
};

/// See `xcore_plugin_sdk::plugin`.
#[proc_macro_attribute]
pub fn plugin(attr: TokenStream, item: TokenStream) -> TokenStream {
    if !attr.is_empty() {
        let span = Tokens::from(attr).span();
        return syn::Error::new(span, "#[plugin] takes no arguments").to_compile_error().into();
    }
    let item = syn::parse_macro_input!(item as ItemImpl);
    expand(item).unwrap_or_else(|e| e.to_compile_error()).into()
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Action,
    Route,
    Event,
}

struct Example {
    name: String,
    input: String,
    output: String,
}

struct Handler {
    method: ImplItemFn,
    kind: Kind,
    name: String,
    routes: Vec<(String, String)>,
    events: Vec<String>,
    examples: Vec<Example>,
    doc: Vec<String>,
}

fn expand(mut item: ItemImpl) -> syn::Result<Tokens> {
    let is_plugin_impl = item
        .trait_
        .as_ref()
        .and_then(|(_, path, _)| path.segments.last())
        .is_some_and(|s| s.ident == "Plugin");
    if !is_plugin_impl {
        return Err(syn::Error::new(
            item.span(),
            "#[plugin] goes on the `impl Plugin for YourType` block, around the handlers",
        ));
    }
    let mut handlers = Vec::new();
    let mut kept = Vec::new();
    for it in std::mem::take(&mut item.items) {
        match it {
            ImplItem::Fn(f) => match handler(f)? {
                Ok(h) => handlers.push(h),
                Err(f) => kept.push(ImplItem::Fn(f)),
            },
            other => kept.push(other),
        }
    }
    for f in &kept {
        if let ImplItem::Fn(f) = f {
            if f.sig.ident == "call" || f.sig.ident == "actions" {
                return Err(syn::Error::new(
                    f.sig.ident.span(),
                    format!("#[plugin] writes `{}` from the handlers; remove this one", f.sig.ident),
                ));
            }
        }
    }
    if handlers.is_empty() {
        return Err(syn::Error::new(
            item.span(),
            "#[plugin] found no handler: mark methods with #[action], #[route(GET, \"/path\")] or #[on(\"event\")]",
        ));
    }
    let mut seen = std::collections::BTreeMap::new();
    for h in &handlers {
        if let Some(first) = seen.insert(h.name.clone(), h.method.sig.ident.to_string()) {
            return Err(syn::Error::new(
                h.method.sig.ident.span(),
                format!("action '{}' is already handled by `{first}`", h.name),
            ));
        }
    }

    let arms = handlers.iter().map(dispatch_arm).collect::<syn::Result<Vec<_>>>()?;
    let descriptions = handlers.iter().map(description).collect::<syn::Result<Vec<_>>>()?;
    let methods = handlers.iter().map(|h| &h.method);
    let self_ty = &item.self_ty;
    let (impl_generics, _, where_clause) = item.generics.split_for_impl();
    item.items = kept;
    item.items.push(syn::parse_quote! {
        // `PluginError::from(e)` is the identity when a handler already returns PluginError.
        #[allow(clippy::useless_conversion)]
        fn call(
            &self,
            ctx: &::xcore_plugin_sdk::Context,
            req: ::xcore_plugin_sdk::Request<'_>,
        ) -> ::core::result::Result<::xcore_plugin_sdk::Reply, ::xcore_plugin_sdk::PluginError> {
            match req.action() {
                #(#arms)*
                other => ::core::result::Result::Err(::xcore_plugin_sdk::PluginError::unknown_action(other)),
            }
        }
    });
    item.items.push(syn::parse_quote! {
        fn actions() -> ::core::option::Option<::std::vec::Vec<::xcore_plugin_sdk::describe::ActionDescription>> {
            let mut schemas = ::xcore_plugin_sdk::typed::Schemas::new();
            ::core::option::Option::Some(::std::vec![#(#descriptions),*])
        }
    });
    Ok(quote! {
        #item

        impl #impl_generics #self_ty #where_clause {
            #(#methods)*
        }
    })
}

/// `Ok(Ok(handler))` for a marked method, `Ok(Err(method))` for one to keep as it is.
fn handler(mut f: ImplItemFn) -> syn::Result<Result<Handler, ImplItemFn>> {
    let mut marker: Option<(Kind, Attribute)> = None;
    let mut rest = Vec::new();
    for a in std::mem::take(&mut f.attrs) {
        let kind = if a.path().is_ident("action") {
            Some(Kind::Action)
        } else if a.path().is_ident("route") {
            Some(Kind::Route)
        } else if a.path().is_ident("on") {
            Some(Kind::Event)
        } else {
            None
        };
        match kind {
            Some(k) if marker.is_some() => {
                let _ = k;
                return Err(syn::Error::new(
                    a.span(),
                    "a handler has one of #[action], #[route] or #[on]; to serve an action on a route, \
                     use #[route] alone (the manifest's routes name it)",
                ));
            }
            Some(k) => marker = Some((k, a)),
            None => rest.push(a),
        }
    }
    f.attrs = rest;
    let Some((kind, attr)) = marker else {
        return Ok(Err(f));
    };
    let doc = f
        .attrs
        .iter()
        .filter(|a| a.path().is_ident("doc"))
        .filter_map(|a| match &a.meta {
            Meta::NameValue(nv) => match &nv.value {
                Expr::Lit(ExprLit { lit: Lit::Str(s), .. }) => Some(s.value().trim().to_string()),
                _ => None,
            },
            _ => None,
        })
        .collect();
    let mut h = Handler {
        name: f.sig.ident.to_string(),
        method: f,
        kind,
        routes: Vec::new(),
        events: Vec::new(),
        examples: Vec::new(),
        doc,
    };
    match kind {
        Kind::Action => {
            if !matches!(attr.meta, Meta::Path(_)) {
                attr.parse_args_with(|input: ParseStream| options(input, &mut h))?;
            }
        }
        Kind::Route => attr.parse_args_with(|input: ParseStream| {
            let method: Ident = input.parse()?;
            let m = method.to_string().to_ascii_uppercase();
            if !["GET", "POST", "PUT", "PATCH", "DELETE"].contains(&m.as_str()) {
                return Err(syn::Error::new(
                    method.span(),
                    "the method is one of GET, POST, PUT, PATCH, DELETE",
                ));
            }
            input.parse::<Token![,]>()?;
            let path: LitStr = input.parse()?;
            if !path.value().starts_with('/') {
                return Err(syn::Error::new(path.span(), "a route's path starts with '/'"));
            }
            h.routes.push((m, path.value()));
            if input.parse::<Option<Token![,]>>()?.is_some() {
                options(input, &mut h)?;
            }
            Ok(())
        })?,
        Kind::Event => attr.parse_args_with(|input: ParseStream| {
            let pattern: LitStr = input.parse()?;
            if pattern.value().is_empty() {
                return Err(syn::Error::new(
                    pattern.span(),
                    "an event pattern such as \"notes.created\" or \"notes.*\"",
                ));
            }
            h.events.push(pattern.value());
            if input.parse::<Option<Token![,]>>()?.is_some() {
                options(input, &mut h)?;
            }
            Ok(())
        })?,
    }
    Ok(Ok(h))
}

/// `name = "..."` and `example(...)` options, comma-separated.
fn options(input: ParseStream, h: &mut Handler) -> syn::Result<()> {
    let list = Punctuated::<Meta, Token![,]>::parse_terminated(input)?;
    for m in list {
        match &m {
            Meta::NameValue(nv) if nv.path.is_ident("name") => {
                h.name = string(&nv.value)?;
                if h.name.is_empty() {
                    return Err(syn::Error::new(nv.value.span(), "an action name cannot be empty"));
                }
            }
            Meta::List(l) if l.path.is_ident("example") => {
                let ex: ExampleArgs = l.parse_args()?;
                h.examples.push(ex.0);
            }
            other => {
                return Err(syn::Error::new(
                    other.span(),
                    "expected `name = \"...\"` or `example(input = \"{...}\", output = \"{...}\")`",
                ))
            }
        }
    }
    Ok(())
}

struct ExampleArgs(Example);

impl Parse for ExampleArgs {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let list = Punctuated::<Meta, Token![,]>::parse_terminated(input)?;
        let (mut name, mut inp, mut out) = (String::new(), None, None);
        for m in list {
            let Meta::NameValue(nv) = &m else {
                return Err(syn::Error::new(
                    m.span(),
                    "expected name = \"...\", input = \"...\" or output = \"...\"",
                ));
            };
            let value = string(&nv.value)?;
            let json = |v: &str| {
                serde_json::from_str::<serde_json::Value>(v)
                    .map(|_| v.to_string())
                    .map_err(|e| syn::Error::new(nv.value.span(), format!("not JSON: {e}")))
            };
            if nv.path.is_ident("name") {
                name = value;
            } else if nv.path.is_ident("input") {
                inp = Some(json(&value)?);
            } else if nv.path.is_ident("output") {
                out = Some(json(&value)?);
            } else {
                return Err(syn::Error::new(nv.path.span(), "expected name, input or output"));
            }
        }
        let span = input.span();
        Ok(ExampleArgs(Example {
            name,
            input: inp.ok_or_else(|| syn::Error::new(span, "an example needs input = \"<JSON>\""))?,
            output: out.ok_or_else(|| syn::Error::new(span, "an example needs output = \"<JSON>\""))?,
        }))
    }
}

fn string(e: &Expr) -> syn::Result<String> {
    match e {
        Expr::Lit(ExprLit { lit: Lit::Str(s), .. }) => Ok(s.value()),
        other => Err(syn::Error::new(other.span(), "expected a string literal")),
    }
}

/// What a handler argument is.
enum Arg<'a> {
    Context,
    Request,
    RequestRef,
    Extract(&'a Type),
}

fn args(f: &ImplItemFn) -> syn::Result<Vec<Arg<'_>>> {
    let mut it = f.sig.inputs.iter();
    match it.next() {
        Some(FnArg::Receiver(r)) if r.reference.is_some() && r.mutability.is_none() => {}
        _ => {
            return Err(syn::Error::new(
                f.sig.span(),
                "a handler takes `&self` first (the host may call it from several threads at once)",
            ))
        }
    }
    it.map(|a| match a {
        FnArg::Typed(t) => Ok(match &*t.ty {
            Type::Reference(r) if last_ident(&r.elem).is_some_and(|i| i == "Context") => Arg::Context,
            Type::Reference(r) if last_ident(&r.elem).is_some_and(|i| i == "Request") => Arg::RequestRef,
            ty if last_ident(ty).is_some_and(|i| i == "Request") => Arg::Request,
            ty => Arg::Extract(ty),
        }),
        FnArg::Receiver(r) => Err(syn::Error::new(r.span(), "unexpected receiver")),
    })
    .collect()
}

fn last_ident(ty: &Type) -> Option<&Ident> {
    match ty {
        Type::Path(p) => p.path.segments.last().map(|s| &s.ident),
        _ => None,
    }
}

/// The success type of `Result<T, E>` (and whether the return is a `Result`).
fn success_type(ret: &ReturnType) -> (Option<Type>, bool) {
    let ty = match ret {
        ReturnType::Default => return (None, false),
        ReturnType::Type(_, ty) => ty,
    };
    if let Type::Path(p) = &**ty {
        if let Some(last) = p.path.segments.last() {
            if last.ident == "Result" {
                if let PathArguments::AngleBracketed(a) = &last.arguments {
                    if let Some(GenericArgument::Type(t)) = a.args.first() {
                        return (Some(t.clone()), true);
                    }
                }
            }
        }
    }
    (Some((**ty).clone()), false)
}

fn kind_tokens(kind: Kind) -> Tokens {
    match kind {
        Kind::Action => quote!(::xcore_plugin_sdk::describe::ActionKind::Action),
        Kind::Route => quote!(::xcore_plugin_sdk::describe::ActionKind::Route),
        Kind::Event => quote!(::xcore_plugin_sdk::describe::ActionKind::Event),
    }
}

fn dispatch_arm(h: &Handler) -> syn::Result<Tokens> {
    let name = &h.name;
    let method = &h.method.sig.ident;
    let kind = kind_tokens(h.kind);
    let mut lets = Vec::new();
    let mut passed = Vec::new();
    for (i, a) in args(&h.method)?.into_iter().enumerate() {
        match a {
            Arg::Context => passed.push(quote!(ctx)),
            Arg::Request => passed.push(quote!(req)),
            Arg::RequestRef => passed.push(quote!(&req)),
            Arg::Extract(ty) => {
                let var = Ident::new(&format!("__arg{i}"), Span::call_site());
                lets.push(quote_spanned! {ty.span()=>
                    let #var = <#ty as ::xcore_plugin_sdk::typed::FromCall>::from_call(ctx, &req, #kind)?;
                });
                passed.push(quote!(#var));
            }
        }
    }
    let (success, is_result) = success_type(&h.method.sig.output);
    let call = quote!(self.#method(#(#passed),*));
    let body = match (success, is_result) {
        (None, _) => quote! { #call; ::core::result::Result::Ok(::xcore_plugin_sdk::Reply::empty()) },
        (Some(t), true) => quote_spanned! {t.span()=>
            match #call {
                ::core::result::Result::Ok(v) => <#t as ::xcore_plugin_sdk::typed::IntoReply>::into_reply(v),
                ::core::result::Result::Err(e) => ::core::result::Result::Err(::xcore_plugin_sdk::PluginError::from(e)),
            }
        },
        (Some(t), false) => quote_spanned! {t.span()=>
            <#t as ::xcore_plugin_sdk::typed::IntoReply>::into_reply(#call)
        },
    };
    Ok(quote! {
        #name => {
            #(#lets)*
            #body
        }
    })
}

fn description(h: &Handler) -> syn::Result<Tokens> {
    let name = &h.name;
    let kind = kind_tokens(h.kind);
    let summary = h.doc.iter().find(|l| !l.is_empty()).cloned();
    let rest: Vec<&String> = h.doc.iter().skip_while(|l| l.is_empty()).skip(1).collect();
    let rest = rest.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("\n").trim().to_string();
    let summary = match summary {
        Some(s) => quote!(::core::option::Option::Some(::std::string::String::from(#s))),
        None => quote!(::core::option::Option::None),
    };
    let long = if rest.is_empty() {
        quote!(::core::option::Option::None)
    } else {
        quote!(::core::option::Option::Some(::std::string::String::from(#rest)))
    };
    let routes = h.routes.iter().map(|(m, p)| {
        quote!(::xcore_plugin_sdk::describe::RouteDescription {
            method: ::std::string::String::from(#m),
            path: ::std::string::String::from(#p),
        })
    });
    let events = h.events.iter().map(|e| quote!(::std::string::String::from(#e)));
    let examples = h.examples.iter().map(|ex| {
        let (n, i, o) = (&ex.name, &ex.input, &ex.output);
        quote!(::xcore_plugin_sdk::typed::example(#n, #i, #o))
    });
    let mut describe_args = Vec::new();
    for a in args(&h.method)? {
        if let Arg::Extract(ty) = a {
            describe_args.push(quote! {
                <#ty as ::xcore_plugin_sdk::typed::FromCall>::describe(&mut d, &mut schemas);
            });
        }
    }
    let describe_output = match success_type(&h.method.sig.output) {
        (Some(t), _) => {
            quote! { <#t as ::xcore_plugin_sdk::typed::IntoReply>::describe(&mut d, &mut schemas); }
        }
        (None, _) => quote! {},
    };
    Ok(quote! {{
        let mut d = ::xcore_plugin_sdk::typed::action(#name, #kind);
        d.summary = #summary;
        d.description = #long;
        d.routes = ::std::vec![#(#routes),*];
        d.events = ::std::vec![#(#events),*];
        d.examples = ::std::vec![#(#examples),*];
        #(#describe_args)*
        #describe_output
        d
    }})
}
