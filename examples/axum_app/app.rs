//! The notes app of the axum example (and of `tests/web_postgres.rs`, which drives it with a
//! real HTTP client): a form post that writes a row, then a redirect to a page that reads it.
//!
//! [`ConsistencyLayer`] carries each visitor's consistency token in a cookie, so the page after
//! the post reads the new row although the replica has not replayed it yet, and later pages
//! read from the replica once it has. The `/sync` routes do the same with sync Diesel on
//! tokio's blocking threads, through [`task::spawn_blocking`].

use axum::extract::{Form, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use diesel::pg::PgConnection;
use diesel::{ExpressionMethods, QueryDsl};
use diesel_async::pooled_connection::bb8;
use diesel_sharding::web::ConsistencyLayer;
use diesel_sharding::{task, AsyncRoutedPgConnection, Cluster, Pool, Route};

mod schema {
    diesel::table! {
        notes (id) {
            id -> Int8,
            body -> Text,
        }
    }
}
use schema::notes;

/// The table the app needs.
pub(crate) const SCHEMA: &str =
    "CREATE TABLE IF NOT EXISTS notes (id BIGSERIAL PRIMARY KEY, body TEXT NOT NULL)";

#[derive(Clone)]
struct App {
    /// diesel-async's routed connections.
    pool: bb8::Pool<AsyncRoutedPgConnection>,
    /// Sync Diesel's routed connections (r2d2).
    sync: Pool<PgConnection>,
}

#[derive(serde::Deserialize)]
struct NewNote {
    body: String,
}

/// The app's routes under the consistency layer, with the token in a cookie (inside a tokio
/// runtime: the bb8 pool needs one).
pub(crate) fn router(cluster: Cluster<PgConnection>) -> Result<Router, diesel_sharding::Error> {
    Ok(routes(&cluster)?.layer(ConsistencyLayer::new(cluster)))
}

/// The app's routes alone.
pub(crate) fn routes(cluster: &Cluster<PgConnection>) -> Result<Router, diesel_sharding::Error> {
    let app = App {
        pool: cluster.bb8_pool("default")?,
        sync: cluster.pool("default")?,
    };
    Ok(Router::new()
        .route("/notes", post(add_note))
        .route("/notes/{body}", get(show_note))
        .route("/sync/notes", post(add_note_sync))
        .route("/sync/notes/{body}", get(show_note_sync))
        .with_state(app))
}

/// A failure, as a 500 that names it.
struct Failed(String);

impl<E: std::fmt::Display> From<E> for Failed {
    fn from(e: E) -> Self {
        Failed(e.to_string())
    }
}

impl IntoResponse for Failed {
    fn into_response(self) -> Response {
        (StatusCode::INTERNAL_SERVER_ERROR, self.0).into_response()
    }
}

/// The page of a note: how many notes have this body, and which server said so.
fn page(body: &str, count: i64, route: Option<Route>) -> String {
    let (server, reason) = match route {
        Some(route) => (route.server, route.reason.to_string()),
        None => ("?".to_owned(), "?".to_owned()),
    };
    format!("{count} note(s) '{body}' (read on {server}: {reason})\n")
}

async fn add_note(State(app): State<App>, Form(note): Form<NewNote>) -> Result<Redirect, Failed> {
    let mut conn = app.pool.get().await?;
    diesel_async::RunQueryDsl::execute(
        diesel::insert_into(notes::table).values(notes::body.eq(&note.body)),
        &mut *conn,
    )
    .await?;
    Ok(Redirect::to(&format!("/notes/{}", note.body)))
}

async fn show_note(State(app): State<App>, Path(body): Path<String>) -> Result<String, Failed> {
    let mut conn = app.pool.get().await?;
    let count: i64 = diesel_async::RunQueryDsl::get_result(
        notes::table.filter(notes::body.eq(&body)).count(),
        &mut *conn,
    )
    .await?;
    Ok(page(&body, count, conn.last_route()))
}

async fn add_note_sync(
    State(app): State<App>,
    Form(note): Form<NewNote>,
) -> Result<Redirect, Failed> {
    let body = note.body.clone();
    task::spawn_blocking(move || -> Result<usize, Failed> {
        let mut conn = app.sync.get()?;
        Ok(diesel::RunQueryDsl::execute(
            diesel::insert_into(notes::table).values(notes::body.eq(&body)),
            &mut conn,
        )?)
    })
    .await?;
    Ok(Redirect::to(&format!("/sync/notes/{}", note.body)))
}

async fn show_note_sync(
    State(app): State<App>,
    Path(body): Path<String>,
) -> Result<String, Failed> {
    task::spawn_blocking(move || {
        let mut conn = app.sync.get()?;
        let count: i64 = diesel::RunQueryDsl::get_result(
            notes::table.filter(notes::body.eq(&body)).count(),
            &mut conn,
        )?;
        Ok(page(&body, count, conn.last_route()))
    })
    .await
}
