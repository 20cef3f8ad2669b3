//! A table of listing cases compared with Kinto: the same records are seeded, then each row's
//! query string is sent and the status, ids in order, `Next-Page`/`Total-Objects`/`Alert`
//! headers, error message and (for `_fields`) the projected data are checked.
//!
//! Every expectation was observed on Kinto 26.5.0 (memory backend, basicauth) with the same
//! seed and query, except the rows marked `.postgres(…)`: there Kinto's memory backend departs
//! from its PostgreSQL backend, which kinto-protocol.md §4.4 makes the reference, and the row
//! holds the PostgreSQL answer (the note says what the memory backend does), and the rows marked
//! `.deliberate(…)`, where Tidemark follows a recommendation of kinto-protocol.md instead of a
//! Kinto quirk (the note gives Kinto's answer).
//!
//! `{lm:ID}` in a query stands for the `last_modified` of ID (or of its tombstone) in the
//! seeded collection, since timestamps differ from one server to the other.

use serde_json::{Map, Value};

use crate::common::{Server, ALICE};

/// Records written in this order (`None`: delete it). `z1` and `z2` leave tombstones.
const SEED: &[(&str, Option<&str>)] = &[
    (
        "a",
        Some(
            r#"{"age": 10, "name": "Alice", "tags": ["a", "b"], "person": {"name": "Eliot", "age": 40}, "flag": true, "score": 1.5, "group": 1}"#,
        ),
    ),
    (
        "b",
        Some(
            r#"{"age": 20, "name": "bob", "tags": ["b"], "person": {"name": "Ann", "age": 30}, "flag": false, "score": 2, "group": 1}"#,
        ),
    ),
    ("c", Some(r#"{"age": "30", "name": "Carol", "tags": [], "flag": "true", "group": 2}"#)),
    ("d", Some(r#"{"age": null, "name": "dave_x", "tags": ["c", {"k": 1}], "group": 2}"#)),
    ("e", Some(r#"{"name": "Eve%", "title": "a,b", "group": 3}"#)),
    ("f", Some(r#"{"age": 10, "name": "frank", "tags": "a", "person": "none", "n.dot": 1, "group": 3}"#)),
    (
        "g",
        Some(
            r#"{"age": [1, 2], "name": "Ünïcode", "tags": ["a"], "person": {"name": "Eliot"}, "obj": {"x": {"y": 1}}}"#,
        ),
    ),
    ("h", Some(r#"{"age": {"v": 1}, "name": "123", "flag": 1}"#)),
    ("z1", Some(r#"{"age": 99, "name": "Zed"}"#)),
    ("z1", None),
    ("i", Some(r#"{"age": 15.5, "name": "ivy", "tags": ["b", "a"]}"#)),
    ("z2", Some(r#"{"age": 98, "name": "Zoe"}"#)),
    ("z2", None),
];

struct Case {
    method: &'static str,
    query: &'static str,
    status: u16,
    ids: &'static [&'static str],
    /// `Some`: a `Next-Page` is expected, with this query string (token elided as `…`).
    next_page: Option<&'static str>,
    /// Following every `Next-Page` yields these ids, in order (`"ERROR <status> <message>"`
    /// where a page fails).
    pages: &'static [&'static str],
    alert: bool,
    total: Option<&'static str>,
    message: Option<&'static str>,
    /// The objects returned, without `last_modified` (which differs between servers).
    data: Option<&'static str>,
    postgres: Option<&'static str>,
    deliberate: Option<&'static str>,
}

impl Case {
    fn new(method: &'static str, query: &'static str, status: u16, ids: &'static [&'static str]) -> Case {
        Case {
            method,
            query,
            status,
            ids,
            next_page: None,
            pages: &[],
            alert: false,
            total: None,
            message: None,
            data: None,
            postgres: None,
            deliberate: None,
        }
    }

    fn next_page(self, query: &'static str, pages: &'static [&'static str]) -> Case {
        Case { next_page: Some(query), pages, ..self }
    }

    fn alert(self) -> Case {
        Case { alert: true, ..self }
    }

    fn data(self, data: &'static str) -> Case {
        Case { data: Some(data), ..self }
    }

    /// Kinto's memory backend answers otherwise; the row holds the PostgreSQL answer.
    fn postgres(self, why: &'static str) -> Case {
        Case { postgres: Some(why), ..self }
    }

    /// Tidemark follows a recommendation of kinto-protocol.md instead of a Kinto quirk.
    fn deliberate(self, why: &'static str) -> Case {
        Case { deliberate: Some(why), ..self }
    }
}

fn get(query: &'static str, ids: &'static [&'static str]) -> Case {
    Case::new("GET", query, 200, ids)
}

fn delete(query: &'static str, ids: &'static [&'static str]) -> Case {
    Case::new("DELETE", query, 200, ids)
}

fn head(query: &'static str, total: &'static str) -> Case {
    Case { total: Some(total), ..Case::new("HEAD", query, 200, &[]) }
}

/// An error; an empty message is not checked (HEAD has no body).
fn fail(method: &'static str, query: &'static str, status: u16, message: &'static str) -> Case {
    Case { message: (!message.is_empty()).then_some(message), ..Case::new(method, query, status, &[]) }
}

fn cases() -> Vec<Case> {
    vec![
        get("", &["i", "h", "g", "f", "e", "d", "c", "b", "a"]),
        // eq and value typing
        get("age=10", &["f", "a"]),
        get("age=10.0", &["f", "a"]),
        get("age=\"10\"", &[]),
        get("age=\"30\"", &["c"]),
        get("age=30", &[]),
        get("age=null", &["d"]),
        get("name=Alice", &["a"]),
        get("name=alice", &[]),
        get("name=\"123\"", &["h"]),
        get("name=123", &[]),
        get("flag=true", &["a"]),
        get("flag=\"true\"", &["c"]),
        get("flag=1", &["h"]),
        get("score=2.0", &["b"]),
        get("score=1.5", &["a"]),
        get("tags=b", &[]),
        get("tags=[\"a\",\"b\"]", &["a"]),
        get("eq_age=20", &["b"]),
        get("id=a", &["a"]),
        get("title=a,b", &["e"]),
        get("age=[1,2]", &["g"]),
        get("age={\"v\":1}", &["h"]),
        get("unknown=1", &[]),
        // not_
        get("not_age=10", &["i", "h", "g", "e", "d", "c", "b"]),
        get("not_name=Alice", &["i", "h", "g", "f", "e", "d", "c", "b"]),
        get("not_id=a", &["i", "h", "g", "f", "e", "d", "c", "b"]),
        get("not_age=null", &["i", "h", "g", "f", "e", "c", "b", "a"]),
        // lt_ gt_ min_ max_
        get("lt_age=20", &["i", "f", "d", "c", "a"]),
        get("lt_age=\"4\"", &["d", "c"]),
        get("gt_age=10", &["i", "h", "g", "e", "b"]),
        get("gt_age=1", &["i", "h", "g", "f", "e", "b", "a"]),
        get("min_age=15", &["i", "h", "g", "e", "b"]),
        get("max_age=20", &["i", "f", "d", "c", "b", "a"]),
        get("gt_age=\"30\"", &["i", "h", "g", "f", "e", "b", "a"]),
        get("lt_name=C", &["h", "a"]),
        get("min_name=b", &["i", "g", "f", "d", "b"]),
        get("gt_score=1.5", &["i", "h", "g", "f", "e", "d", "c", "b"]),
        get("max_age=null", &["d"]),
        get("lt_id=c", &["b", "a"]),
        get("gt_flag=false", &["i", "g", "f", "e", "d", "a"]),
        // in_ exclude_
        get("in_age=10,20", &["f", "b", "a"]),
        get("in_name=Alice,bob", &["b", "a"]),
        get("in_id=a,b,zz", &["b", "a"]),
        get("in_age=", &[]),
        get("in_age=\"30\",null", &["d", "c"]),
        get("in_flag=true,1", &["h", "a"]),
        get("exclude_age=10,20", &["i", "h", "g", "e", "d", "c"]),
        get("exclude_id=a,b", &["i", "h", "g", "f", "e", "d", "c"]),
        get("exclude_age=", &["e"]).postgres("memory backend: every object; PostgreSQL sends `NOT IN (NULL)`, which only objects missing the field pass"),
        get("exclude_name=Alice,bob,ivy", &["h", "g", "f", "e", "d", "c"]),
        // like_
        get("like_name=al", &["a"]),
        get("like_name=A*", &["a"]),
        get("like_name=*e", &["g", "a"]),
        get("like_name=a*e", &["a"]),
        get("like_name=*O*", &["g", "c", "b"]),
        get("like_name=ü", &["g"]),
        get("like_age=\"1\"", &["i", "h", "g", "f", "a"]).postgres("memory backend: 500 (like_ on a non-string); PostgreSQL matches the text form"),
        get("like_name=\"12\"", &["h"]),
        get("like_id=a", &["a"]),
        get("like_name=*", &["i", "h", "g", "f", "e", "d", "c", "b", "a"]),
        get("like_title=,", &["e"]).postgres("memory backend: 500 (like_ where the field is missing); PostgreSQL: missing never matches"),
        // has_
        get("has_age=true", &["i", "h", "g", "f", "d", "c", "b", "a"]),
        get("has_age=false", &["e"]),
        get("has_person=1", &["g", "f", "b", "a"]),
        get("has_person=0", &["i", "h", "e", "d", "c"]),
        get("has_tags=\"x\"", &["i", "g", "f", "d", "c", "b", "a"]),
        get("has_flag=null", &["i", "g", "f", "e", "d"]),
        // contains_ contains_any_
        get("contains_tags=a", &["i", "g", "a"]).postgres("memory backend also matches the string \"a\" (f); PostgreSQL only matches arrays"),
        get("contains_tags=[\"a\",\"b\"]", &["i", "a"]),
        get("contains_tags={\"k\":1}", &["d"]),
        get("contains_tags=[]", &["i", "g", "d", "c", "b", "a"]).postgres("memory backend also matches the string \"a\" (f); PostgreSQL only matches arrays"),
        get("contains_any_tags=[\"c\",\"b\"]", &["i", "d", "b", "a"]),
        get("contains_any_tags=a", &["i", "g", "a"]).postgres("memory backend also matches the string \"a\" (f); PostgreSQL only matches arrays"),
        get("contains_any_tags=[]", &[]),
        get("contains_age=1", &["g"]),
        // nested fields
        get("person.name=Eliot", &["g", "a"]),
        get("person.age=40", &["a"]),
        get("gt_person.age=35", &["i", "h", "g", "f", "e", "d", "c", "a"]),
        get("lt_person.age=35", &["b"]),
        get("has_person.age=true", &["b", "a"]),
        get("obj.x.y=1", &["g"]),
        get("n.dot=1", &["f"]),
        get("like_person.name=el", &["g", "a"]).postgres("memory backend: 500 (like_ where the field is missing); PostgreSQL: missing never matches"),
        get("in_person.name=Ann,Eliot", &["g", "b", "a"]),
        // sorting
        get("_sort=age", &["d", "c", "f", "a", "i", "b", "g", "h", "e"]),
        get("_sort=-age", &["e", "h", "g", "b", "i", "f", "a", "c", "d"]),
        get("_sort=name", &["h", "a", "c", "e", "b", "d", "f", "i", "g"]),
        get("_sort=-name", &["g", "i", "f", "d", "b", "e", "c", "a", "h"]),
        get("_sort=group,name", &["a", "b", "c", "d", "e", "f", "h", "i", "g"]),
        get("_sort=group,-name", &["b", "a", "d", "c", "f", "e", "g", "i", "h"]),
        get("_sort=-group,age", &["i", "g", "h", "f", "e", "d", "c", "a", "b"]),
        get("_sort=flag", &["c", "h", "b", "a", "i", "g", "f", "e", "d"]),
        get("_sort=-flag", &["i", "g", "f", "e", "d", "a", "b", "h", "c"]),
        get("_sort=title", &["e", "i", "h", "g", "f", "d", "c", "b", "a"]),
        get("_sort=-title", &["i", "h", "g", "f", "d", "c", "b", "a", "e"]),
        get("_sort=last_modified", &["a", "b", "c", "d", "e", "f", "g", "h", "i"]),
        get("_sort=-last_modified", &["i", "h", "g", "f", "e", "d", "c", "b", "a"]),
        get("_sort=id", &["a", "b", "c", "d", "e", "f", "g", "h", "i"]),
        get("_sort=-id", &["i", "h", "g", "f", "e", "d", "c", "b", "a"]),
        get("_sort=person.name", &["b", "g", "a", "i", "h", "f", "e", "d", "c"]),
        get("_sort=-person.age,name", &["h", "c", "e", "d", "f", "i", "g", "a", "b"]),
        get("_sort=score", &["a", "b", "i", "h", "g", "f", "e", "d", "c"]),
        get("_sort=tags", &["c", "f", "g", "b", "a", "i", "d", "h", "e"]).postgres("memory backend sorts arrays like Python lists (f, c, g, a, b, i, d, h, e); PostgreSQL's JSONB order: `[]` first, then by length"),
        get("_sort=a.b-c,name", &["h", "a", "c", "e", "b", "d", "f", "i", "g"]),
        get("_sort=+group,%20-name%20", &["b", "a", "d", "c", "f", "e", "g", "i", "h"]),
        // _since / _before / _to with deletions
        get("_since={lm:d}", &["z2", "i", "z1", "h", "g", "f", "e"]),
        get("_since=\"{lm:d}\"", &["z2", "i", "z1", "h", "g", "f", "e"]),
        get("_since={lm:z1}", &["z2", "i"]),
        get("_before={lm:e}", &["d", "c", "b", "a"]),
        get("_before={lm:i}", &["z1", "h", "g", "f", "e", "d", "c", "b", "a"]),
        get("_to={lm:e}", &["d", "c", "b", "a"]).alert(),
        get("_since={lm:h}&_before={lm:z2}", &["i", "z1"]),
        get("gt_last_modified={lm:h}", &["z2", "i", "z1"]),
        get("min_last_modified={lm:i}", &["z2", "i"]),
        get("last_modified={lm:c}", &["c"]),
        get("last_modified={lm:z1}", &["z1"]),
        get("lt_last_modified={lm:b}", &["a"]),
        get("max_last_modified={lm:b}", &["b", "a"]),
        get("not_last_modified={lm:a}", &["z2", "i", "z1", "h", "g", "f", "e", "d", "c", "b"]),
        get("_since={lm:a}&age=10", &["f"]),
        get("_since={lm:a}&not_age=10", &["z2", "i", "z1", "h", "g", "e", "d", "c", "b"]),
        get("_since={lm:a}&has_age=false", &["z2", "z1", "e"]),
        get("_since={lm:a}&exclude_name=Alice", &["z2", "i", "z1", "h", "g", "f", "e", "d", "c", "b"]),
        get("_since={lm:a}&_sort=name", &["h", "c", "e", "b", "d", "f", "i", "g", "z2", "z1"]),
        get("_since=0&deleted=true", &["z2", "z1"]),
        get("deleted=true", &[]),
        get("_since={lm:z2}", &[]),
        get("_since=0&_limit=4", &["z2", "i", "z1", "h"]).next_page("_since=0&_limit=4&_token=…", &["z2", "i", "z1", "h", "g", "f", "e", "d", "c", "b", "a"]),
        // pagination
        get("_limit=3", &["i", "h", "g"]).next_page("_limit=3&_token=…", &["i", "h", "g", "f", "e", "d", "c", "b", "a"]),
        get("_limit=3&_sort=name", &["h", "a", "c"]).next_page("_limit=3&_sort=name&_token=…", &["h", "a", "c", "e", "b", "d", "f", "i", "g"]),
        get("_limit=0", &["i", "h", "g", "f", "e", "d", "c", "b", "a"]),
        get("_limit=", &["i", "h", "g", "f", "e", "d", "c", "b", "a"]),
        get("_limit=100", &["i", "h", "g", "f", "e", "d", "c", "b", "a"]),
        get("_limit=9", &["i", "h", "g", "f", "e", "d", "c", "b", "a"]),
        get("_limit=10", &["i", "h", "g", "f", "e", "d", "c", "b", "a"]),
        get("_limit=2&_sort=age", &["d", "c"]).next_page("_limit=2&_sort=age&_token=…", &["d", "c", "f", "a", "i", "b", "g", "h", "ERROR 400 querystring: _token has invalid content"]),
        get("_limit=2&_sort=-age", &["e", "h"]).next_page("_limit=2&_sort=-age&_token=…", &["e", "h", "ERROR 400 querystring: _token has invalid content"]),
        get("_limit=1&_sort=flag", &["c"]).next_page("_limit=1&_sort=flag&_token=…", &["c", "h", "b", "a", "i", "g", "f", "e", "d"]),
        get("_limit=2&_sort=person.name", &["b", "g"]).next_page("_limit=2&_sort=person.name&_token=…", &["b", "g", "a", "i", "h", "f", "e", "d", "c"]),
        get("_limit=2&_sort=-person.age,name", &["h", "c"]).next_page("_limit=2&_sort=-person.age%2Cname&_token=…", &["h", "c", "e", "d", "f", "i", "g", "a", "b"]),
        get("_limit=3&_sort=title", &["e", "i", "h"]).next_page("_limit=3&_sort=title&_token=…", &["e", "i", "h", "g", "f", "d", "c", "b", "a"]),
        get("_limit=2&_sort=-title", &["i", "h"]).next_page("_limit=2&_sort=-title&_token=…", &["i", "h", "g", "f", "d", "c", "b", "a", "e"]),
        get("_limit=2&_sort=group,-name", &["b", "a"]).next_page("_limit=2&_sort=group%2C-name&_token=…", &["b", "a", "d", "c", "f", "e", "g", "i", "h"]),
        get("_limit=2&_since=0&_sort=name", &["h", "a"]).next_page("_limit=2&_since=0&_sort=name&_token=…", &["h", "a", "c", "e", "b", "d", "f", "i", "g", "z2", "z1"]),
        get("_limit=1&_sort=score", &["a"]).next_page("_limit=1&_sort=score&_token=…", &["a", "b", "i", "h", "g", "f", "e", "d", "c"]),
        get("_limit=2&_sort=id", &["a", "b"]).next_page("_limit=2&_sort=id&_token=…", &["a", "b", "c", "d", "e", "f", "g", "h", "i"]),
        get("_limit=4&_sort=-id", &["i", "h", "g", "f"]).next_page("_limit=4&_sort=-id&_token=…", &["i", "h", "g", "f", "e", "d", "c", "b", "a"]),
        get("_limit=2&_sort=last_modified", &["a", "b"]).next_page("_limit=2&_sort=last_modified&_token=…", &["a", "b", "c", "d", "e", "f", "g", "h", "i"]),
        get("_limit=1&age=10", &["f"]).next_page("_limit=1&age=10&_token=…", &["f", "a"]),
        get("_limit=2&_sort=-group,-flag,name", &["i", "g"]).next_page("_limit=2&_sort=-group%2C-flag%2Cname&_token=…", &["i", "g", "h", "e", "f", "d", "c", "a", "b"]),
        get("_limit=2&_sort=tags", &["c", "f"]).next_page("_limit=2&_sort=tags&_token=…", &["c", "f", "g", "b", "ERROR 400 querystring: _token has invalid content"]).postgres("memory backend sorts arrays like Python lists (f, c, g, a…); PostgreSQL's JSONB order puts `[]` first, then by length"),
        get("_limit=3&_sort=obj.x.y,-id", &["g", "i", "h"]).next_page("_limit=3&_sort=obj.x.y%2C-id&_token=…", &["g", "i", "h", "f", "e", "d", "c", "b", "a"]),
        get("_limit=2&_since={lm:d}&_before={lm:z2}", &["i", "z1"]).next_page("_limit=2&_since={lm:d}&_before={lm:z2}&_token=…", &["i", "z1", "h", "g", "f", "e"]),
        // _fields
        get("_fields=name", &["i", "h", "g", "f", "e", "d", "c", "b", "a"]).data(r#"[{"name": "ivy", "id": "i"}, {"name": "123", "id": "h"}, {"name": "Ünïcode", "id": "g"}, {"name": "frank", "id": "f"}, {"name": "Eve%", "id": "e"}, {"name": "dave_x", "id": "d"}, {"name": "Carol", "id": "c"}, {"name": "bob", "id": "b"}, {"name": "Alice", "id": "a"}]"#),
        get("_fields=person.name&_sort=id", &["a", "b", "c", "d", "e", "f", "g", "h", "i"]).data(r#"[{"person": {"name": "Eliot"}, "id": "a"}, {"person": {"name": "Ann"}, "id": "b"}, {"id": "c"}, {"id": "d"}, {"id": "e"}, {"person": "none", "id": "f"}, {"person": {"name": "Eliot"}, "id": "g"}, {"id": "h"}, {"id": "i"}]"#),
        get("_fields=person.name,age&age=10", &["f", "a"]).data(r#"[{"person": "none", "age": 10, "id": "f"}, {"person": {"name": "Eliot"}, "age": 10, "id": "a"}]"#),
        get("_fields=nope&id=a", &["a"]).data(r#"[{"id": "a"}]"#),
        get("_fields=obj.x.y,n.dot&_sort=id", &["a", "b", "c", "d", "e", "f", "g", "h", "i"]).data(r#"[{"id": "a"}, {"id": "b"}, {"id": "c"}, {"id": "d"}, {"id": "e"}, {"id": "f"}, {"obj": {"x": {"y": 1}}, "id": "g"}, {"id": "h"}, {"id": "i"}]"#),
        get("_fields=&id=a", &["a"]).data(r#"[{"age": 10, "name": "Alice", "tags": ["a", "b"], "person": {"name": "Eliot", "age": 40}, "flag": true, "score": 1.5, "group": 1, "id": "a"}]"#),
        get("_fields=name&_since={lm:i}", &["z2"]).data(r#"[{"id": "z2"}]"#),
        // more edge cases
        get("age=1e1", &["f", "a"]),
        get("age=010", &[]),
        get("score=1.50", &["a"]),
        get("age=10&age=20", &[]),
        get("name=", &[]),
        get("has_name=", &[]),
        get("has_age=", &["e"]),
        get("eq_in_stock=1", &[]),
        get("in_stock=1", &[]),
        get("foo-bar=1", &[]),
        get("lt_age=null", &[]),
        get("min_age=null", &["i", "h", "g", "f", "e", "d", "c", "b", "a"]),
        get("gt_age=null", &["i", "h", "g", "f", "e", "c", "b", "a"]),
        get("not_tags=[\"b\"]", &["i", "h", "g", "f", "e", "d", "c", "a"]),
        get("like_name=%", &["e"]),
        get("like_name=_", &["d"]),
        get("like_name=E*%", &["e"]),
        get("like_name=*_*", &["d"]),
        get("like_id=*", &["i", "h", "g", "f", "e", "d", "c", "b", "a"]),
        get("min_id=c", &["i", "h", "g", "f", "e", "d", "c"]),
        get("in_id=", &[]),
        get("exclude_id=", &[]).postgres("memory backend: every object; PostgreSQL sends `NOT IN (NULL)`, which no id passes"),
        get("contains_tags=\"a\"", &["i", "g", "a"]).postgres("memory backend also matches the string \"a\" (f); PostgreSQL only matches arrays"),
        get("in_name=\"Alice,bob\"", &[]),
        get("in_age=10.0,\"30\"", &["f", "c", "a"]),
        get("not_age=10.0", &["i", "h", "g", "e", "d", "c", "b"]),
        get("_sort=bogus", &["i", "h", "g", "f", "e", "d", "c", "b", "a"]),
        get("_sort=-score,-age", &["e", "h", "g", "i", "f", "c", "d", "b", "a"]),
        get("_sort=name&_sort=id", &["h", "a", "c", "e", "b", "d", "f", "i", "g"]),
        get("_sort=-group,-flag,name", &["i", "g", "h", "e", "f", "d", "c", "a", "b"]),
        get("_sort=obj.x.y,-id", &["g", "i", "h", "f", "e", "d", "c", "b", "a"]),
        get("_since={lm:d}&_limit=2", &["z2", "i"]).next_page("_since={lm:d}&_limit=2&_token=…", &["z2", "i", "z1", "h", "g", "f", "e"]),
        get("_limit=1&_sort=tags", &["c"]).next_page("_limit=1&_sort=tags&_token=…", &["c", "ERROR 400 querystring: _token has invalid content"]).postgres("memory backend sorts arrays like Python lists (f first); PostgreSQL's JSONB order puts `[]` first"),
        get("last_modified=\"{lm:c}\"", &["c"]),
        get("_since={lm:d}&_sort=-name&_limit=3", &["z2", "z1", "g"]).next_page("_since={lm:d}&_sort=-name&_limit=3&_token=…", &["z2", "z1", "g", "i", "f", "e", "h"]),
        get("_before=0", &[]),
        get("_since=0", &["z2", "i", "z1", "h", "g", "f", "e", "d", "c", "b", "a"]),
        fail("GET", "in_last_modified={lm:a},{lm:b}", 400, "Invalid value for in_last_modified"),
        fail("GET", "exclude_last_modified={lm:a}", 400, "Invalid value for exclude_last_modified"),
        get("_since={lm:a}&has_name=true", &["i", "h", "g", "f", "e", "d", "c", "b"]).postgres("memory backend bug: a truthy has_ drops the filters before it (a and the tombstones come back); PostgreSQL ANDs them"),
        get("_since={lm:a}&gt_age=50", &["z2", "z1", "h", "g", "e"]),
        get("_since={lm:a}&like_name=z", &[]).postgres("memory backend: 500 (like_ on tombstones, which have no name); PostgreSQL: missing never matches"),
        get("_since={lm:a}&contains_tags=a", &["i", "g"]).postgres("memory backend also matches the string \"a\" (f); PostgreSQL only matches arrays"),
        get("_fields=tags,flag&_sort=id&_limit=3", &["a", "b", "c"]).next_page("_fields=tags%2Cflag&_sort=id&_limit=3&_token=…", &["a", "b", "c", "d", "e", "f", "g", "h", "i"]).data(r#"[{"tags": ["a", "b"], "flag": true, "id": "a"}, {"tags": ["b"], "flag": false, "id": "b"}, {"tags": [], "flag": "true", "id": "c"}]"#),
        get("_since=null", &["i", "h", "g", "f", "e", "d", "c", "b", "a"]).deliberate("Kinto's memory backend returns everything with the tombstones (z2, i, z1, h, …), PostgreSQL nothing; Tidemark treats null as absent (§4.1 REC)"),
        get("_before=null", &["i", "h", "g", "f", "e", "d", "c", "b", "a"]).deliberate("Kinto returns nothing; Tidemark treats null as absent (§4.1 REC)"),
        // invalid
        fail("GET", "_limit=-1", 400, "_limit in querystring: -1 is less than minimum value 0"),
        fail("GET", "_limit=abc", 400, "_limit in querystring: \"abc\" is not a number"),
        fail("GET", "_limit=true", 400, "_limit in querystring: \"true\" is not a number"),
        fail("GET", "like_age=1", 400, "Invalid value for like_age"),
        fail("GET", "like_name=true", 400, "Invalid value for like_name"),
        fail("GET", "in_id=a,1", 400, "Invalid value for in_id"),
        fail("GET", "contains_id=a", 400, "contains_id in querystring: Field 'id' is not an array"),
        fail("GET", "contains_any_last_modified=1", 400, "Invalid value for contains_any_last_modified"),
        fail("GET", "last_modified=abc", 400, "last_modified in querystring: \"abc\" is not a number"),
        fail("GET", "gt_last_modified=abc", 400, "Invalid value for gt_last_modified"),
        fail("GET", "in_last_modified=1,a", 400, "Invalid value for in_last_modified"),
        fail("GET", "_token=xyz", 400, "querystring: _token has invalid content"),
        fail("GET", "id=1", 400, "1 is not a string: {'id': ''}"),
        fail("GET", "name=%00", 400, "name in querystring: Invalid character 0x00"),
        fail("GET", "na%00me=1", 400, "na\u{0}me in querystring: Invalid character 0x00"),
        fail("GET", "_since=99999999999999", 400, "Invalid value for _since"),
        fail("GET", "_since=abc", 400, "_since in querystring: \"abc\" is not a number"),
        fail("GET", "_since=", 400, "Invalid value for _since"),
        fail("GET", "_since=true", 400, "_since in querystring: \"true\" is not a number"),
        fail("GET", "_before=-1", 400, "_before in querystring: -1 is less than minimum value 0"),
        fail("GET", "_limit=99999999999999999999", 400, "_limit in querystring: 100000000000000000000 is greater than maximum value 9223372036854775808"),
        get("_limit=1.5", &["i"]).next_page("_limit=1&_token=…", &["i", "h", "g", "f", "e", "d", "c", "b", "a"]),
        fail("GET", "lt_last_modified=-5", 400, "Invalid value for lt_last_modified"),
        fail("GET", "has_last_modified=abc", 400, "Invalid value for has_last_modified"),
        fail("GET", "like_name=[1]", 400, "Invalid value for like_name"),
        // HEAD: Total-Objects counts
        head("", "9"),
        head("age=10", "2"),
        head("_since={lm:a}", "8"),
        head("_limit=2", "9"),
        head("has_age=false", "1"),
        head("_since=0&deleted=true", "0"),
        fail("HEAD", "like_age=1", 400, ""),
        head("_since=0", "9"),
        head("_before={lm:z2}", "9"),
        head("not_age=10&_since=0", "7"),
        head("contains_tags=b", "3"),
        // plural DELETE (each on a freshly seeded collection)
        delete("age=10", &["f", "a"]),
        delete("in_name=Alice,bob&_limit=1", &["b"]).next_page("in_name=Alice%2Cbob&_limit=1&_token=…", &["b", "a"]),
        delete("_since={lm:h}", &["i"]),
        delete("like_name=*e", &["g", "a"]),
        delete("_sort=name&_limit=2", &["h", "a"]).next_page("_sort=name&_limit=2&_token=…", &["h", "a", "c", "e", "b", "d", "f", "i", "g"]).deliberate("Kinto builds the DELETE token from the tombstone, so the next page is empty (h, a); Tidemark uses the deleted object's values (§4.10 REC)"),
        delete("gt_age=15&_sort=-age", &["e", "h", "g", "b", "i"]),
        delete("_before={lm:c}", &["b", "a"]),
        delete("nope=1", &[]),
        fail("DELETE", "like_age=1", 400, "Invalid value for like_age"),
        delete("", &["i", "h", "g", "f", "e", "d", "c", "b", "a"]),
        delete("_since=0&has_age=false", &["e"]),
        delete("_limit=3&_sort=last_modified", &["a", "b", "c"]).next_page("_limit=3&_sort=last_modified&_token=…", &["a", "b", "c", "d", "e", "f", "g", "h", "i"]).deliberate("Kinto builds the DELETE token from the tombstone, so the next page is empty (a, b, c); Tidemark uses the deleted object's values (§4.10 REC)"),
        delete("in_id=a,z1,i", &["i", "a"]),
        delete("_fields=name&id=a", &["a"]).data(r#"[{"id": "a", "deleted": true}]"#),
    ]
}

/// Seeds `collection` in bucket `b` and returns each id's last `last_modified`.
async fn seed(s: &Server, collection: &str) -> Map<String, Value> {
    let path = format!("/buckets/b/collections/{collection}");
    assert_eq!(s.put(&path, Some(ALICE), serde_json::json!({})).await.status, 201);
    let mut timestamps = Map::new();
    for (id, data) in SEED {
        let url = format!("{path}/records/{id}");
        let reply = match data {
            Some(data) => {
                let data: Value = serde_json::from_str(data).expect("seed json");
                s.put(&url, Some(ALICE), serde_json::json!({ "data": data })).await
            }
            None => s.delete(&url, Some(ALICE)).await,
        };
        assert!(reply.status.is_success(), "{id}: {}", reply.body);
        timestamps.insert((*id).to_owned(), reply.body["data"]["last_modified"].clone());
    }
    timestamps
}

/// Replaces each `{lm:ID}` by ID's timestamp.
fn with_timestamps(query: &str, timestamps: &Map<String, Value>) -> String {
    let mut text = query.to_owned();
    while let Some(start) = text.find("{lm:") {
        let end = start + text[start..].find('}').expect("closing brace");
        let id = &text[start + 4..end];
        let ts = timestamps.get(id).unwrap_or_else(|| panic!("no record {id}")).to_string();
        text.replace_range(start..=end, &ts);
    }
    text
}

/// Percent-encodes what a URL cannot carry raw.
fn encode(text: &str) -> String {
    let mut out = String::new();
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~=&%,*+/:;!$'()@".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn ids_of(body: &Value) -> Vec<String> {
    body["data"].as_array().into_iter().flatten().filter_map(|r| r["id"].as_str().map(str::to_owned)).collect()
}

fn without_timestamps(data: &Value) -> Value {
    let mut data = data.clone();
    for object in data.as_array_mut().into_iter().flatten() {
        if let Some(map) = object.as_object_mut() {
            map.remove("last_modified");
        }
    }
    data
}

/// What differs between the reply and the row, if anything.
async fn check(s: &Server, case: &Case, collection: &str, timestamps: &Map<String, Value>) -> Vec<String> {
    let records = format!("/buckets/b/collections/{collection}/records");
    let query = encode(&with_timestamps(case.query, timestamps));
    let url = if query.is_empty() { records.clone() } else { format!("{records}?{query}") };
    let reply = s.call(case.method, &url, Some(ALICE), None, &[]).await;
    let mut problems = Vec::new();
    let mut expect = |what: &str, got: String, want: String| {
        if got != want {
            problems.push(format!("{what}: got {got}, want {want}"));
        }
    };
    expect("status", reply.status.as_u16().to_string(), case.status.to_string());
    if case.status == 200 && case.method != "HEAD" {
        expect("ids", format!("{:?}", ids_of(&reply.body)), format!("{:?}", case.ids));
    }
    let next_query = reply.header("next-page").map(|url| {
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        assert_eq!(base, format!("{}{records}", s.base), "Next-Page names the same list");
        let elided: Vec<&str> =
            query.split('&').map(|pair| if pair.starts_with("_token=") { "_token=…" } else { pair }).collect();
        elided.join("&")
    });
    let want_query = case.next_page.map(|q| with_timestamps(q, timestamps));
    expect("Next-Page", format!("{next_query:?}"), format!("{want_query:?}"));
    if let (Some(_), Some(mut next)) = (case.next_page, reply.header("next-page").map(str::to_owned)) {
        let want = case.pages;
        let mut got = ids_of(&reply.body);
        loop {
            let page = s.call(case.method, &next, Some(ALICE), None, &[]).await;
            if page.status != 200 {
                got.push(format!("ERROR {} {}", page.status.as_u16(), page.body["message"].as_str().unwrap_or("")));
                break;
            }
            got.extend(ids_of(&page.body));
            match page.header("next-page") {
                Some(url) if got.len() < 100 => next = url.to_owned(),
                _ => break,
            }
        }
        expect("pages", format!("{got:?}"), format!("{want:?}"));
    }
    expect("Alert", reply.header("alert").is_some().to_string(), case.alert.to_string());
    expect("Total-Objects", format!("{:?}", reply.header("total-objects")), format!("{:?}", case.total));
    if case.total.is_some() {
        expect("Total-Records", format!("{:?}", reply.header("total-records")), format!("{:?}", case.total));
    }
    if let Some(message) = case.message {
        expect("message", format!("{:?}", reply.body["message"].as_str()), format!("{:?}", Some(message)));
    }
    if let Some(data) = case.data {
        let want: Value = serde_json::from_str(data).expect("row data json");
        expect("data", without_timestamps(&reply.body["data"]).to_string(), want.to_string());
    }
    problems
}

#[tokio::test]
async fn listing_cases_match_kinto() {
    let s = Server::start().await;
    assert_eq!(s.put("/buckets/b", Some(ALICE), serde_json::json!({})).await.status, 201);
    let shared = seed(&s, "c").await;
    let mut failures = Vec::new();
    // Deletions change the list: each gets a freshly seeded collection.
    let mut deletions = 0;
    for case in cases() {
        let (collection, timestamps) = if case.method == "DELETE" {
            deletions += 1;
            let name = format!("del{deletions}");
            let timestamps = seed(&s, &name).await;
            (name, timestamps)
        } else {
            ("c".to_owned(), shared.clone())
        };
        for problem in check(&s, &case, &collection, &timestamps).await {
            let origin = match (case.postgres, case.deliberate) {
                (Some(why), _) => format!(" [PostgreSQL row: {why}]"),
                (_, Some(why)) => format!(" [deliberate: {why}]"),
                _ => String::new(),
            };
            failures.push(format!("{} ?{}: {problem}{origin}", case.method, case.query));
        }
    }
    assert!(failures.is_empty(), "{} mismatches:\n{}", failures.len(), failures.join("\n"));
    s.stop().await;
}
