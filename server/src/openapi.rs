//! `GET /v1/__api__`: a Swagger 2.0 (OpenAPI) description of the service, generated from the
//! resource registry, as Kinto serves its own.

use serde_json::{json, Map, Value};

use crate::request::ApiRequest;
use crate::settings::Plugin;
use crate::state::AppState;
use crate::toolkit::Resource;

fn error(description: &str) -> Value {
    json!({"description": description, "schema": {"$ref": "#/definitions/Error"}})
}

/// The responses every endpoint may give, plus its own.
fn responses(own: &[(&str, Value)]) -> Value {
    let mut all = Map::new();
    for (code, response) in own {
        all.insert((*code).to_owned(), response.clone());
    }
    for (code, description) in [
        ("400", "The request is invalid"),
        ("401", "Authentication is required"),
        ("403", "The caller may not do this"),
        ("406", "The client does not accept JSON"),
        ("503", "The service is unavailable; retry after `Retry-After` seconds"),
    ] {
        all.entry(code.to_owned()).or_insert_with(|| error(description));
    }
    Value::Object(all)
}

fn path_parameter(name: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "type": "string"})
}

fn query_parameter(name: &str, kind: &str, description: &str) -> Value {
    json!({"name": name, "in": "query", "required": false, "type": kind, "description": description})
}

fn header_parameter(name: &str, description: &str) -> Value {
    json!({"name": name, "in": "header", "required": false, "type": "string", "description": description})
}

fn body_parameter(definition: &str) -> Value {
    json!({"name": "body", "in": "body", "required": false, "schema": {"$ref": format!("#/definitions/{definition}")}})
}

/// `/buckets/{bucket_id}/collections/{collection_id}/records` and its path parameters.
fn list_path(state: &AppState, kind: &Resource) -> (String, Vec<Value>) {
    let mut path = String::new();
    let mut parameters = Vec::new();
    for ancestor in state.registry.lineage(kind) {
        let name = format!("{}_id", ancestor.name);
        path.push_str(&format!("/{}/{{{name}}}", ancestor.plural));
        parameters.push(path_parameter(&name));
    }
    path.push_str(&format!("/{}", kind.plural));
    (path, parameters)
}

fn operation(tag: &str, id: String, summary: String, parameters: Vec<Value>, responses: Value) -> Value {
    json!({
        "tags": [tag],
        "operationId": id,
        "summary": summary,
        "produces": ["application/json"],
        "parameters": parameters,
        "responses": responses,
    })
}

fn resource_paths(state: &AppState, kind: &Resource, paths: &mut Map<String, Value>) {
    let (list, parents) = list_path(state, kind);
    let name = &kind.name;
    let tag = format!("{}s", capitalized(name));
    let definition = capitalized(name);
    let ok_list = json!({"description": format!("A page of {}s", name), "schema": {"$ref": "#/definitions/List"}});
    let ok_one =
        json!({"description": format!("The {name}"), "schema": {"$ref": format!("#/definitions/{definition}")}});
    let preconditions = [
        header_parameter("If-Match", "Only if the object's ETag is this one"),
        header_parameter("If-None-Match", "Only if the object's ETag is not this one (`*`: does not exist)"),
    ];
    let listing = [
        query_parameter("_limit", "integer", "Page size"),
        query_parameter("_sort", "string", "Fields to sort by, `-` for descending"),
        query_parameter("_since", "string", "Only objects changed after this timestamp (deletions included)"),
        query_parameter("_before", "string", "Only objects changed before this timestamp"),
        query_parameter("_token", "string", "The next page's token (from `Next-Page`)"),
        query_parameter("_fields", "string", "Only these fields"),
        query_parameter("_at", "string", "As it was at this timestamp or stream cursor"),
        query_parameter("_until", "string", "With `_since`: the changes up to this timestamp"),
    ];
    let with = |base: &[Value], more: &[Value]| -> Vec<Value> { base.iter().chain(more).cloned().collect() };
    let mut list_ops = Map::new();
    list_ops.insert(
        "get".into(),
        operation(
            &tag,
            format!("get_{name}s"),
            format!("List {name}s"),
            with(&parents, &listing),
            responses(&[("200", ok_list.clone()), ("304", json!({"description": "Not modified"}))]),
        ),
    );
    list_ops.insert(
        "head".into(),
        operation(
            &tag,
            format!("count_{name}s"),
            format!("Count {name}s (`Total-Objects`)"),
            with(&parents, &listing),
            responses(&[("200", json!({"description": "The count, in headers"}))]),
        ),
    );
    list_ops.insert(
        "post".into(),
        operation(
            &tag,
            format!("create_{name}"),
            format!("Create a {name}"),
            with(
                &parents,
                &[body_parameter(&format!("{definition}Body")), preconditions[0].clone(), preconditions[1].clone()],
            ),
            responses(&[
                ("201", ok_one.clone()),
                ("200", ok_one.clone()),
                ("412", error("A precondition failed")),
                ("415", error("The body is not JSON")),
            ]),
        ),
    );
    list_ops.insert(
        "delete".into(),
        operation(
            &tag,
            format!("delete_{name}s"),
            format!("Delete {name}s"),
            with(&parents, &listing),
            responses(&[("200", ok_list), ("412", error("A precondition failed"))]),
        ),
    );
    paths.insert(list.clone(), Value::Object(list_ops));

    let object_parameters = with(&parents, &[path_parameter("id")]);
    let mut object_ops = Map::new();
    let reads = with(
        &object_parameters,
        &[
            query_parameter("_fields", "string", "Only these fields"),
            query_parameter("_at", "string", "As it was then"),
        ],
    );
    object_ops.insert(
        "get".into(),
        operation(
            &tag,
            format!("get_{name}"),
            format!("Read a {name}"),
            with(&reads, &preconditions),
            responses(&[
                ("200", ok_one.clone()),
                ("304", json!({"description": "Not modified"})),
                ("404", error("No such object")),
            ]),
        ),
    );
    object_ops.insert(
        "head".into(),
        operation(
            &tag,
            format!("head_{name}"),
            format!("Check a {name}"),
            reads,
            responses(&[("200", json!({"description": "It exists"}))]),
        ),
    );
    for (method, verb, id) in [("put", "Create or replace", "update"), ("patch", "Modify", "patch")] {
        object_ops.insert(
            method.into(),
            operation(
                &tag,
                format!("{id}_{name}"),
                format!("{verb} a {name}"),
                with(
                    &object_parameters,
                    &[body_parameter(&format!("{definition}Body")), preconditions[0].clone(), preconditions[1].clone()],
                ),
                responses(&[
                    ("200", ok_one.clone()),
                    ("201", ok_one.clone()),
                    ("404", error("No such object")),
                    ("412", error("A precondition failed")),
                    ("415", error("Unsupported body type")),
                ]),
            ),
        );
    }
    object_ops.insert(
        "delete".into(),
        operation(
            &tag,
            format!("delete_{name}"),
            format!("Delete a {name}"),
            with(&object_parameters, &preconditions),
            responses(&[("200", ok_one), ("404", error("No such object")), ("412", error("A precondition failed"))]),
        ),
    );
    paths.insert(format!("{list}/{{id}}"), Value::Object(object_ops));
}

fn capitalized(name: &str) -> String {
    let mut chars = name.chars();
    chars.next().map(|c| c.to_ascii_uppercase().to_string() + chars.as_str()).unwrap_or_default()
}

fn utility(tag: &str, id: &str, summary: &str) -> Value {
    json!({"get": operation(tag, id.to_owned(), summary.to_owned(), vec![], responses(&[("200", json!({"description": summary}))]))})
}

/// The whole document.
pub fn document(state: &AppState, req: &ApiRequest) -> Value {
    let settings = &state.settings;
    let mut paths = Map::new();
    paths.insert("/".into(), utility("Utilities", "server_info", "Server information and capabilities"));
    paths.insert("/__heartbeat__".into(), utility("Utilities", "heartbeat", "Health of the backends"));
    paths.insert("/__lbheartbeat__".into(), utility("Utilities", "lbheartbeat", "Liveness for load balancers"));
    paths.insert("/__version__".into(), utility("Utilities", "version", "The deployed version"));
    paths.insert("/__api__".into(), utility("Utilities", "api", "This document"));
    paths.insert(
        "/batch".into(),
        json!({"post": operation(
            "Batch",
            "batch".into(),
            "Several requests in one".into(),
            vec![body_parameter("Batch")],
            responses(&[("200", json!({"description": "One response per request"}))]),
        )}),
    );
    if state.endpoints().permissions {
        paths.insert(
            "/permissions".into(),
            utility("Permissions", "get_permissions", "What the caller holds permissions on"),
        );
    }
    if state.plugin(Plugin::History) {
        paths.insert(
            "/buckets/{bucket_id}/history".into(),
            json!({
                "get": operation(
                    "History",
                    "get_history".into(),
                    "The bucket's changes".into(),
                    vec![path_parameter("bucket_id")],
                    responses(&[("200", json!({"description": "History entries", "schema": {"$ref": "#/definitions/List"}}))]),
                ),
                "delete": operation(
                    "History",
                    "delete_history".into(),
                    "Hide the matching entries from now on (recorded in the log, which keeps them)".into(),
                    vec![path_parameter("bucket_id")],
                    responses(&[("200", json!({"description": "Tombstones of the entries", "schema": {"$ref": "#/definitions/List"}}))]),
                ),
            }),
        );
    }
    let mut definitions = Map::new();
    definitions.insert(
        "Error".into(),
        json!({"type": "object", "required": ["code", "errno", "error"], "properties": {
            "code": {"type": "integer"}, "errno": {"type": "integer"}, "error": {"type": "string"},
            "message": {"type": "string"}, "info": {"type": "string"}, "details": {}
        }}),
    );
    definitions.insert(
        "List".into(),
        json!({"type": "object", "properties": {"data": {"type": "array", "items": {"type": "object"}}}}),
    );
    definitions.insert(
        "Batch".into(),
        json!({"type": "object", "properties": {"defaults": {"type": "object"}, "requests": {"type": "array", "items": {"type": "object"}}}}),
    );
    for kind in state.registry.iter() {
        resource_paths(state, kind, &mut paths);
        let definition = capitalized(&kind.name);
        let permissions: Map<String, Value> = kind
            .permission_names()
            .iter()
            .map(|p| ((*p).to_owned(), json!({"type": "array", "items": {"type": "string"}})))
            .collect();
        definitions.insert(
            definition.clone(),
            json!({"type": "object", "properties": {
                "data": {"type": "object"},
                "permissions": {"type": "object", "properties": permissions}
            }}),
        );
        definitions.insert(format!("{definition}Body"), json!({"$ref": format!("#/definitions/{definition}")}));
    }
    let host = req.base_url.split("://").nth(1).and_then(|rest| rest.split('/').next()).unwrap_or("localhost");
    let scheme = req.base_url.split("://").next().unwrap_or("http");
    json!({
        "swagger": "2.0",
        "info": {"title": settings.project_name, "version": settings.project_version},
        "host": host,
        "basePath": &*state.prefix,
        "schemes": [scheme],
        "securityDefinitions": {"basicauth": {"type": "basic", "description": "HTTP Basic Authentication"}},
        "security": [{"basicauth": []}],
        "tags": [],
        "paths": paths,
        "definitions": definitions,
    })
}
