//! A statement rendered before the first `.await` (SQL and owned binds), in the two forms
//! diesel-async's statement cache tells apart: keyed by the original query's static id, or
//! not keyed (cached by its SQL, if at all).

use std::marker::PhantomData;
use std::sync::Arc;

use diesel::backend::Backend;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::result::QueryResult;

/// A rendered statement keyed for the statement cache by the original query's static id.
pub(super) struct Keyed<Id, Q> {
    pub(super) query: Arc<Q>,
    pub(super) _id: PhantomData<fn() -> Id>,
}

impl<Id, Q> Clone for Keyed<Id, Q> {
    fn clone(&self) -> Self {
        Keyed {
            query: self.query.clone(),
            _id: PhantomData,
        }
    }
}

impl<Id: 'static, Q> QueryId for Keyed<Id, Q> {
    type QueryId = Id;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl<Id, Q> Query for Keyed<Id, Q> {
    type SqlType = diesel::sql_types::Untyped;
}

impl<Id, Q: QueryFragment<DB>, DB: Backend> QueryFragment<DB> for Keyed<Id, Q> {
    fn walk_ast<'b>(&'b self, pass: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        self.query.walk_ast(pass)
    }
}

/// The same for a query without a static id.
pub(super) struct Unkeyed<Q> {
    pub(super) query: Arc<Q>,
}

impl<Q> Clone for Unkeyed<Q> {
    fn clone(&self) -> Self {
        Unkeyed {
            query: self.query.clone(),
        }
    }
}

impl<Q> QueryId for Unkeyed<Q> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<Q> Query for Unkeyed<Q> {
    type SqlType = diesel::sql_types::Untyped;
}

impl<Q: QueryFragment<DB>, DB: Backend> QueryFragment<DB> for Unkeyed<Q> {
    fn walk_ast<'b>(&'b self, pass: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        self.query.walk_ast(pass)
    }
}

/// A rendered statement in either form: its rendering, to finish (custom types) before it
/// is first sent, while no copy of it is out.
pub(super) trait Rendered<Q> {
    fn rendered(&self) -> &Q;
    /// `None` once a copy is out.
    fn rendered_mut(&mut self) -> Option<&mut Q>;
}

impl<Id, Q> Rendered<Q> for Keyed<Id, Q> {
    fn rendered(&self) -> &Q {
        &self.query
    }

    fn rendered_mut(&mut self) -> Option<&mut Q> {
        Arc::get_mut(&mut self.query)
    }
}

impl<Q> Rendered<Q> for Unkeyed<Q> {
    fn rendered(&self) -> &Q {
        &self.query
    }

    fn rendered_mut(&mut self) -> Option<&mut Q> {
        Arc::get_mut(&mut self.query)
    }
}
