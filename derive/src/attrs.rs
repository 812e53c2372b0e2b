//! `#[sharding(...)]` parsed into a typed model, with spans, before any check.
//!
//! Parsing never stops at the first mistake: every error goes into [`Errors`] and the parse
//! goes on, so one compile reports all of them (serde_derive's `Ctxt`).

use proc_macro2::{Span, TokenStream};
use quote::ToTokens;
use syn::meta::ParseNestedMeta;
use syn::{Attribute, Expr, ExprLit, ExprPath, Ident, Lit, LitStr, Token};

/// The name of the attribute.
pub(crate) const ATTRIBUTE: &str = "sharding";

/// The keys `#[sharding(...)]` accepts, in the order error messages list them.
const KEYS: &str = "group, database, key, stores_shard";

/// Errors collected across the parse and the checks, reported together.
#[derive(Default)]
pub(crate) struct Errors(Option<syn::Error>);

impl Errors {
    /// Records an error.
    pub(crate) fn push(&mut self, error: syn::Error) {
        match &mut self.0 {
            Some(all) => all.combine(error),
            None => self.0 = Some(error),
        }
    }

    /// Records an error at `span`.
    pub(crate) fn error(&mut self, span: Span, message: impl std::fmt::Display) {
        self.push(syn::Error::new(span, message));
    }

    /// `Err` with every recorded error, or `Ok` if there was none.
    pub(crate) fn finish(self) -> syn::Result<()> {
        self.0.map_or(Ok(()), Err)
    }
}

/// One `key = value` of `#[sharding(...)]`.
pub(crate) struct Setting<T> {
    /// The key as written, where errors about the setting as a whole point.
    pub(crate) key: Ident,
    /// The value; `None` when it was of the wrong kind (that error is already recorded).
    pub(crate) value: Option<T>,
}

/// Everything the `#[sharding(...)]` attributes of one struct say, unchecked: which
/// combinations are valid is decided by the derive.
#[derive(Default)]
pub(crate) struct ShardingAttrs {
    /// `group = "name"`: the shard group.
    pub(crate) group: Option<Setting<LitStr>>,
    /// `database = "name"`: the one unsharded database.
    pub(crate) database: Option<Setting<LitStr>>,
    /// `key = field`: the shard key field.
    pub(crate) key: Option<Setting<Ident>>,
    /// `stores_shard = field`: the field that stores the row's shard.
    pub(crate) stores_shard: Option<Setting<Ident>>,
    /// Whether an attribute had a syntax error: the settings after it were not read.
    pub(crate) incomplete: bool,
}

impl ShardingAttrs {
    /// Accumulates the keys of every `#[sharding(...)]` in `attrs`.
    pub(crate) fn parse(attrs: &[Attribute], errors: &mut Errors) -> Self {
        let mut parsed = Self::default();
        for attr in attrs.iter().filter(|attr| attr.path().is_ident(ATTRIBUTE)) {
            if let Err(error) = attr.parse_nested_meta(|meta| parsed.parse_setting(&meta, errors)) {
                errors.push(error);
                parsed.incomplete = true;
            }
        }
        parsed
    }

    /// Parses one `key = value`. Mistakes in it are recorded and the parse goes on; an `Err`
    /// is a syntax error that ends this attribute.
    fn parse_setting(
        &mut self,
        meta: &ParseNestedMeta<'_>,
        errors: &mut Errors,
    ) -> syn::Result<()> {
        let Some(key) = meta.path.get_ident().cloned() else {
            return unknown_key(meta, errors);
        };
        match key.to_string().as_str() {
            "group" => set(&mut self.group, key, name_value(meta), errors),
            "database" => set(&mut self.database, key, name_value(meta), errors),
            "key" => set(&mut self.key, key, field_value(meta), errors),
            "stores_shard" => set(&mut self.stores_shard, key, field_value(meta), errors),
            _ => unknown_key(meta, errors),
        }
    }
}

/// Stores a setting, unless the key was already given: the first one stays and the second
/// is an error (never the last one silently winning).
fn set<T>(
    slot: &mut Option<Setting<T>>,
    key: Ident,
    value: syn::Result<syn::Result<T>>,
    errors: &mut Errors,
) -> syn::Result<()> {
    let value = match value? {
        Ok(value) => Some(value),
        Err(error) => {
            errors.push(error);
            None
        }
    };
    if slot.is_some() {
        errors.error(key.span(), format_args!("duplicate sharding key `{key}`"));
    } else {
        *slot = Some(Setting { key, value });
    }
    Ok(())
}

/// Records an unknown key and skips its value, if any, so the next keys are still read.
fn unknown_key(meta: &ParseNestedMeta<'_>, errors: &mut Errors) -> syn::Result<()> {
    let path = &meta.path;
    let name = path.to_token_stream().to_string().replace(' ', "");
    errors.push(syn::Error::new_spanned(
        path,
        format_args!("unknown sharding key `{name}`; expected one of: {KEYS}"),
    ));
    if meta.input.peek(Token![=]) {
        meta.value()?.parse::<Expr>()?;
    } else if meta.input.peek(syn::token::Paren) {
        let content;
        syn::parenthesized!(content in meta.input);
        content.parse::<TokenStream>()?;
    }
    Ok(())
}

/// The value of `group`/`database`: a string literal. The outer `Err` is a syntax error, the
/// inner one a value of the wrong kind.
fn name_value(meta: &ParseNestedMeta<'_>) -> syn::Result<syn::Result<LitStr>> {
    let key = meta.path.to_token_stream();
    if !meta.input.peek(Token![=]) {
        return Ok(Err(missing_value(meta, format_args!("`{key} = \"...\"`"))));
    }
    Ok(match meta.value()?.parse::<Expr>()? {
        Expr::Lit(ExprLit {
            lit: Lit::Str(name),
            ..
        }) => Ok(name),
        Expr::Path(ExprPath {
            qself: None, path, ..
        }) if path.get_ident().is_some() => Err(syn::Error::new_spanned(
            &path,
            format_args!(
                "expected a string literal; write `{key} = \"{}\"`",
                path.to_token_stream()
            ),
        )),
        other => Err(syn::Error::new_spanned(
            other,
            format_args!("expected a string literal: `{key} = \"...\"`"),
        )),
    })
}

/// The value of `key`/`stores_shard`: a field name. The outer `Err` is a syntax error, the
/// inner one a value of the wrong kind.
fn field_value(meta: &ParseNestedMeta<'_>) -> syn::Result<syn::Result<Ident>> {
    let key = meta.path.to_token_stream();
    if !meta.input.peek(Token![=]) {
        return Ok(Err(missing_value(meta, format_args!("`{key} = field`"))));
    }
    let value = meta.value()?.parse::<Expr>()?;
    if let Expr::Path(ExprPath {
        attrs,
        qself: None,
        path,
    }) = &value
    {
        if let (true, Some(field)) = (attrs.is_empty(), path.get_ident()) {
            return Ok(Ok(field.clone()));
        }
    }
    if let Expr::Lit(ExprLit {
        lit: Lit::Str(name),
        ..
    }) = &value
    {
        if syn::parse_str::<Ident>(&name.value()).is_ok() {
            return Ok(Err(syn::Error::new(
                name.span(),
                format_args!(
                    "expected a field name, not a string; write `{key} = {}`",
                    name.value()
                ),
            )));
        }
    }
    Ok(Err(syn::Error::new_spanned(
        value,
        format_args!("expected a field name: `{key} = field`"),
    )))
}

/// The error on a key given without `= value`.
fn missing_value(meta: &ParseNestedMeta<'_>, form: std::fmt::Arguments<'_>) -> syn::Error {
    let key = &meta.path;
    syn::Error::new_spanned(
        key,
        format_args!("`{}` needs a value: {form}", key.to_token_stream()),
    )
}
