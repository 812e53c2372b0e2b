// @generated-style schema of migrations/sqlite, shared by the examples.

diesel::table! {
    users (id) {
        id -> Integer,
        name -> Text,
        email -> Text,
        created_at -> Timestamp,
    }
}
