//! `#[derive(ShardedModel)]`: checks the attributes against the struct, then writes the impl.

use proc_macro2::{Span, TokenStream};
use quote::{quote, quote_spanned};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{Data, DeriveInput, Field, Fields, FieldsNamed, Ident, LitStr};

use crate::attrs::{Errors, Setting, ShardingAttrs, ATTRIBUTE};

/// The three valid forms, for the error on a struct that gives none of them.
const FORMS: &str = "#[sharding(group = \"..\", key = field)], \
                     #[sharding(group = \"..\", stores_shard = field)] or \
                     #[sharding(database = \"..\")]";

/// Where a model lives, checked: what its `SHARDING` says.
enum Placement<'a> {
    /// `group = ".."` with `key` or `stores_shard`.
    Group { group: LitStr, by: ShardBy<'a> },
    /// `database = ".."`.
    Database { database: LitStr },
}

/// How the shard of a row of a group is found, with the field it reads.
enum ShardBy<'a> {
    /// `key = field`.
    Key(&'a Field),
    /// `stores_shard = field`.
    StoredShard(&'a Field),
}

/// Expands `#[derive(ShardedModel)]`, or returns every mistake found in the input.
pub(crate) fn derive(input: DeriveInput) -> syn::Result<TokenStream> {
    let mut errors = Errors::default();
    let attrs = ShardingAttrs::parse(&input.attrs, &mut errors);
    let fields = named_fields(&input, &mut errors);
    let placement = check(&input.ident, fields, attrs, &mut errors);
    for field in fields.iter().flat_map(|fields| &fields.named) {
        for attr in field.attrs.iter().filter(|a| a.path().is_ident(ATTRIBUTE)) {
            errors.push(syn::Error::new_spanned(
                attr,
                "#[sharding(...)] goes on the struct, not on a field",
            ));
        }
    }
    errors.finish()?;
    let placement = placement.expect("a check that fails records an error");
    Ok(expand(&input, &placement))
}

/// The struct's named fields; anything else is an error (and `None`).
fn named_fields<'a>(input: &'a DeriveInput, errors: &mut Errors) -> Option<&'a FieldsNamed> {
    let (span, kind) = match &input.data {
        Data::Struct(data) => match &data.fields {
            Fields::Named(fields) => return Some(fields),
            Fields::Unnamed(fields) => (fields.span(), "tuple structs"),
            Fields::Unit => (input.ident.span(), "unit structs"),
        },
        Data::Enum(data) => (data.enum_token.span, "enums"),
        Data::Union(data) => (data.union_token.span, "unions"),
    };
    errors.error(
        span,
        format_args!("#[derive(ShardedModel)] is only for structs with named fields, not {kind}"),
    );
    None
}

/// Checks the combination of settings and the fields they name; `None` after an error.
fn check<'a>(
    name: &Ident,
    fields: Option<&'a FieldsNamed>,
    attrs: ShardingAttrs,
    errors: &mut Errors,
) -> Option<Placement<'a>> {
    let ShardingAttrs {
        group,
        database,
        key,
        stores_shard,
        incomplete,
    } = attrs;
    let key_field = find_field(name, fields, key.as_ref(), errors);
    let stores_shard_field = find_field(name, fields, stores_shard.as_ref(), errors);
    match (group, database) {
        (Some(_), Some(database)) => {
            errors.error(
                database.key.span(),
                "`group` and `database` cannot both be given: a model is either sharded over \
                 a group or lives on one database",
            );
            None
        }
        // an attribute that failed to parse may hold the missing settings: its error is enough
        (None, None) if incomplete => None,
        (None, None) => {
            errors.error(
                name.span(),
                format_args!("#[derive(ShardedModel)] needs {FORMS}"),
            );
            None
        }
        (Some(group), None) => match (key, stores_shard) {
            (None, None) if incomplete => None,
            (None, None) => {
                errors.error(
                    group.key.span(),
                    "`group` needs the field that places a row: `key = field` or \
                     `stores_shard = field`",
                );
                None
            }
            (Some(_), Some(stores_shard)) => {
                errors.error(
                    stores_shard.key.span(),
                    "`key` and `stores_shard` cannot both be given: a row is placed either by \
                     its shard key or by the shard it stores",
                );
                None
            }
            (Some(_), None) => Some(Placement::Group {
                group: group.value?,
                by: ShardBy::Key(key_field?),
            }),
            (None, Some(_)) => Some(Placement::Group {
                group: group.value?,
                by: ShardBy::StoredShard(stores_shard_field?),
            }),
        },
        (None, Some(database)) => {
            let misplaced = [(key, "has no shard key"), (stores_shard, "stores no shard")];
            let mut valid = true;
            for (setting, what) in misplaced {
                if let Some(setting) = setting {
                    let key = &setting.key;
                    errors.error(
                        key.span(),
                        format_args!(
                            "`{key}` is only for models sharded over a `group`: a `database` \
                             model lives on one database and {what}"
                        ),
                    );
                    valid = false;
                }
            }
            valid.then_some(())?;
            Some(Placement::Database {
                database: database.value?,
            })
        }
    }
}

/// The field a `key`/`stores_shard` setting names; an error if the struct has none of that
/// name.
fn find_field<'a>(
    name: &Ident,
    fields: Option<&'a FieldsNamed>,
    setting: Option<&Setting<Ident>>,
    errors: &mut Errors,
) -> Option<&'a Field> {
    let wanted = setting?.value.as_ref()?;
    // without named fields the struct itself is the error
    let fields = fields?;
    let found = fields
        .named
        .iter()
        .find(|field| field.ident.as_ref() == Some(wanted));
    if found.is_none() {
        let names: Vec<String> = fields
            .named
            .iter()
            .filter_map(|field| field.ident.as_ref().map(Ident::to_string))
            .collect();
        let known = if names.is_empty() {
            format!("`{name}` has no fields")
        } else {
            format!("its fields are: {}", names.join(", "))
        };
        errors.error(
            wanted.span(),
            format_args!("no field `{wanted}` on `{name}`; {known}"),
        );
    }
    found
}

/// The impl of `ShardedModel`.
fn expand(input: &DeriveInput, placement: &Placement<'_>) -> TokenStream {
    let name = &input.ident;
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();

    // the defaults, a model with neither shard key nor stored shard; the placement overrides
    let mut key_type = quote!(());
    let mut shard_key = quote!(::core::option::Option::None);
    let mut stored_shard = quote!(::core::option::Option::None);
    let mut set_stored_shard = quote!(let _ = shard;);

    let sharding = match placement {
        Placement::Database { database } => quote! {
            ::diesel_sharding::sharding::Sharding::Database { database: #database }
        },
        Placement::Group { group, by } => {
            let by = match by {
                ShardBy::Key(field) => {
                    let (ident, ty, field_name) = field_parts(field);
                    // `type Key` is the field's type, with its tokens and spans: a type that
                    // is no shard key fails the trait's bound there, "the trait bound `f64:
                    // ShardKey` is not satisfied" pointing at the field's type
                    key_type = quote!(#ty);
                    shard_key = quote!(::core::option::Option::Some(&self.#ident));
                    quote!(::diesel_sharding::sharding::ShardBy::Key { field: #field_name })
                }
                ShardBy::StoredShard(field) => {
                    let (ident, ty, field_name) = field_parts(field);
                    // spanned on the field's type: a type that cannot store a shard gets
                    // "the trait bound `String: StoredShard` is not satisfied" pointing at it
                    let field_type = quote_spanned! {ty.span()=>
                        <#ty as ::diesel_sharding::sharding::StoredShard>
                    };
                    stored_shard = quote!(#field_type::get(&self.#ident));
                    set_stored_shard = quote!(#field_type::set(&mut self.#ident, shard););
                    quote! {
                        ::diesel_sharding::sharding::ShardBy::StoredShard { field: #field_name }
                    }
                }
            };
            quote! {
                ::diesel_sharding::sharding::Sharding::Group { group: #group, by: #by }
            }
        }
    };

    quote! {
        const _: () = {
            #[automatically_derived]
            impl #impl_generics ::diesel_sharding::sharding::ShardedModel
                for #name #ty_generics #where_clause
            {
                const SHARDING: ::diesel_sharding::sharding::Sharding = #sharding;

                type Key = #key_type;

                #[inline]
                fn shard_key(&self) -> ::core::option::Option<&Self::Key> {
                    #shard_key
                }

                #[inline]
                fn stored_shard(&self) -> ::core::option::Option<::core::primitive::i32> {
                    #stored_shard
                }

                #[inline]
                fn set_stored_shard(&mut self, shard: ::core::primitive::i32) {
                    #set_stored_shard
                }
            }
        };
    }
}

/// A named field's ident, type and name as it appears in `SHARDING` (without `r#`).
fn field_parts(field: &Field) -> (&Ident, &syn::Type, LitStr) {
    let ident = field.ident.as_ref().expect("named fields have idents");
    let name = LitStr::new(&ident.unraw().to_string(), Span::call_site());
    (ident, &field.ty, name)
}
