//! The OpenAPI document the server serves at `/api/v1/openapi.json`. Written by hand and
//! checked by a test against the router's routes.

use serde_json::{json, Value};

fn problem_responses() -> Value {
    json!({
        "400": { "$ref": "#/components/responses/Problem" },
        "401": { "$ref": "#/components/responses/Problem" },
        "404": { "$ref": "#/components/responses/Problem" },
        "405": { "$ref": "#/components/responses/Problem" },
        "409": { "$ref": "#/components/responses/Problem" },
        "413": { "$ref": "#/components/responses/Problem" },
        "415": { "$ref": "#/components/responses/Problem" },
        "500": { "$ref": "#/components/responses/Problem" }
    })
}

fn with_problems(ok: Value) -> Value {
    let mut responses = problem_responses();
    if let (Value::Object(all), Value::Object(ok)) = (&mut responses, ok) {
        all.extend(ok);
    }
    responses
}

/// A request body of `schema` (a `$ref` name under `components/schemas`).
fn body(schema: &str) -> Value {
    json!({ "required": true, "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{schema}") } } } })
}

/// The 202 of suspend, resume and cancel.
fn requested() -> Value {
    with_problems(json!({
        "202": {
            "description": "Accepted: `recorded` in the flow's log, or `ignored` (a no-op by the state table; nothing recorded)",
            "content": { "application/json": { "schema": { "$ref": "#/components/schemas/RequestOutcome" } } }
        }
    }))
}

fn id_param() -> Value {
    json!({ "name": "id", "in": "path", "required": true, "schema": { "type": "string", "format": "uuid" } })
}

/// The document.
pub(crate) fn document() -> Value {
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "flowstate",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "A durable flow engine: task graphs, goal-driven plans and durable functions on an append-only event log. Errors are RFC 9457 problem details with a stable `code`. Every time in a JSON answer is an RFC 3339 string (UTC, microseconds)."
        },
        "security": [{ "bearer": [] }, {}],
        "paths": {
            "/api/v1/flows": {
                "get": {
                    "summary": "List live flows; with archived=true, archived flows too (read from the archive, merged by id; time filters refused; 409 no_archive when the server has no archive)",
                    "parameters": [
                        { "name": "kind", "in": "query", "schema": { "enum": ["task_graph", "plan", "function"] } },
                        { "name": "status", "in": "query", "schema": { "type": "string" } },
                        { "name": "definition", "in": "query", "schema": { "type": "string" } },
                        { "name": "after", "in": "query", "schema": { "type": "string", "format": "uuid" } },
                        { "name": "limit", "in": "query", "schema": { "type": "integer", "minimum": 0, "maximum": 1000 } },
                        { "name": "archived", "in": "query", "schema": { "type": "boolean", "default": false } }
                    ],
                    "responses": with_problems(json!({ "200": { "description": "A page of flows and the cursor of the next" } }))
                },
                "post": {
                    "summary": "Start a flow: a plan by goals and inputs, or a registered task graph or durable function by name",
                    "requestBody": { "required": true, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/StartRequest" } } } },
                    "responses": with_problems(json!({ "201": { "description": "Started: {\"id\": ...}" } }))
                }
            },
            "/api/v1/flows/{id}": {
                "get": {
                    "summary": "A flow's state (now, or as of a sequence number or time), with its plan or graph, attributes and provenance",
                    "parameters": [id_param(), { "name": "at", "in": "query", "schema": { "type": "string" }, "description": "SEQ or an RFC 3339 time" }],
                    "responses": with_problems(json!({ "200": { "description": "The folded record, plus total_seq; read from the archive (and marked archived: true) when the flow is no longer in the live store" } }))
                }
            },
            "/api/v1/flows/{id}/events": {
                "get": {
                    "summary": "A flow's events after a sequence number",
                    "parameters": [id_param(), { "name": "after", "in": "query", "schema": { "type": "integer" } }, { "name": "limit", "in": "query", "schema": { "type": "integer", "maximum": 1000 } }],
                    "responses": with_problems(json!({ "200": { "description": "{\"events\": [{seq, time, type, body}]}, from the archive (with archived: true) when the flow is no longer in the live store" } }))
                }
            },
            "/api/v1/flows/{id}/stream": {
                "get": {
                    "summary": "Server-Sent Events: the flow's events as they are recorded (event `flow_event`)",
                    "parameters": [id_param(), { "name": "after", "in": "query", "schema": { "type": "integer" } }],
                    "responses": with_problems(json!({ "200": { "description": "text/event-stream" } }))
                }
            },
            "/api/v1/events/stream": {
                "get": {
                    "summary": "Server-Sent Events: every change of a flow (event `flow_event`, type `changed`)",
                    "responses": with_problems(json!({ "200": { "description": "text/event-stream" } }))
                }
            },
            "/api/v1/flows/{id}/signals": {
                "post": {
                    "summary": "Send a signal to a durable function",
                    "parameters": [id_param()],
                    "requestBody": body("Signal"),
                    "responses": with_problems(json!({ "202": { "description": "Delivered" } }))
                }
            },
            "/api/v1/flows/{id}/cancel": {
                "post": {
                    "summary": "Cancel a flow of any kind",
                    "description": "A durable function stops at its next effect (a step in flight finishes first) and is done with a `Cancelled` failure. A plan that is active fails with the reason `cancelled: REASON`, compensates what succeeded and deactivates; one that failed already is `ignored`; a completed, deactivated or archived plan is 409 `invalid_state`. A task graph that has not finished reverts: no new atom starts, running atoms finish, every atom that ran is reverted and the flow ends REVERTED (FAILURE if a revert fails); a SUSPENDED one is handed to the workers for it; REVERTED, or cancelled already, is `ignored`; SUCCESS or FAILURE is 409 `invalid_state`.",
                    "parameters": [id_param()],
                    "requestBody": body("Reason"),
                    "responses": requested()
                }
            },
            "/api/v1/flows/{id}/suspend": {
                "post": {
                    "summary": "Suspend a task graph: running atoms finish, nothing new starts, it ends SUSPENDED and no worker takes it until it is resumed",
                    "description": "RUNNING → SUSPENDING is recorded and honoured by whichever engine process runs the flow, at its next task boundary. PENDING, SUSPENDING, SUSPENDED and finished flows: `ignored` (the flow table's no-ops). A flow being loaded after a crash (RESUMING): 409 `invalid_state`. Plans and durable functions have no suspended state: 409 `not_suspendable` (cancel them instead). The reason is logged, not recorded.",
                    "parameters": [id_param()],
                    "requestBody": body("Reason"),
                    "responses": requested()
                }
            },
            "/api/v1/flows/{id}/resume": {
                "post": {
                    "summary": "Resume a SUSPENDED task graph (SUSPENDED → RUNNING; ready for the workers again)",
                    "description": "A RUNNING flow: `ignored`. Any other state: 409 `invalid_state`. Plans and durable functions: 409 `not_suspendable`. The reason is logged, not recorded.",
                    "parameters": [id_param()],
                    "requestBody": body("Reason"),
                    "responses": requested()
                }
            },
            "/api/v1/steps": {
                "get": {
                    "summary": "The registered plan steps (newest versions)",
                    "responses": with_problems(json!({ "200": { "description": "{\"steps\": [StepSpec]}" } }))
                },
                "post": {
                    "summary": "Register an HTTP step: the engine POSTs each work item's inputs (and its Idempotency-Key) to `url` and reads the outputs from the JSON object it answers; 408, 429, 5xx and transport errors are retried",
                    "description": "Answered 201 once the registration is kept in the server's registrations file (durable across restarts); a write that fails is 500 `internal` and registers nothing; past MAX_STEP_REGISTRATIONS versions (or the file's size limit), 409 `limit_reached`.",
                    "requestBody": { "required": true, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/HttpStep" } } } },
                    "responses": with_problems(json!({ "201": { "description": "{\"name\", \"version\"}" } }))
                }
            },
            "/api/v1/work/{token}": {
                "post": {
                    "security": [],
                    "summary": "Report the outcome of an asynchronous HTTP step's attempt (the token is the report URL's last segment)",
                    "parameters": [{ "name": "token", "in": "path", "required": true, "schema": { "type": "string" } }, { "name": "key", "in": "query", "required": true, "schema": { "type": "string" }, "description": "The attempt's secret, part of the report URL it was given" }],
                    "requestBody": body("Report"),
                    "responses": with_problems(json!({ "202": { "description": "Handed to the waiting attempt" } }))
                }
            },
            "/api/v1/steps/{name}": {
                "delete": {
                    "summary": "Remove a step from what new flows are planned from (running flows keep it)",
                    "description": "Kept in the registrations file before 204; a write that fails is 500 `internal` and the step stays registered.",
                    "parameters": [{ "name": "name", "in": "path", "required": true, "schema": { "type": "string" } }],
                    "responses": with_problems(json!({ "204": { "description": "Removed" } }))
                }
            }
        },
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "responses": {
                "Problem": {
                    "description": "A problem (RFC 9457)",
                    "content": { "application/problem+json": { "schema": { "$ref": "#/components/schemas/Problem" } } }
                }
            },
            "schemas": {
                "Problem": {
                    "type": "object",
                    "required": ["type", "title", "status", "detail", "code"],
                    "properties": {
                        "type": { "type": "string" }, "title": { "type": "string" },
                        "status": { "type": "integer" }, "detail": { "type": "string" },
                        "code": { "enum": ["invalid_request", "not_found", "method_not_allowed", "invalid_state", "not_suspendable", "unauthorized", "forbidden_host", "too_large", "unsupported_media_type", "planning_failed", "unknown_definition", "limit_reached", "no_archive", "internal"] }
                    }
                },
                "Reason": {
                    "type": "object",
                    "additionalProperties": false,
                    "properties": { "reason": { "type": "string" } }
                },
                "RequestOutcome": {
                    "type": "object",
                    "required": ["outcome"],
                    "properties": { "outcome": { "enum": ["recorded", "ignored"] } }
                },
                "Signal": {
                    "type": "object",
                    "additionalProperties": false,
                    "required": ["name"],
                    "properties": { "name": { "type": "string", "minLength": 1, "maxLength": 256 }, "value": {} }
                },
                "Report": {
                    "type": "object",
                    "additionalProperties": false,
                    "properties": {
                        "outputs": { "type": "object" },
                        "error": {
                            "type": "object",
                            "additionalProperties": false,
                            "required": ["kind"],
                            "properties": { "kind": { "type": "string" }, "message": { "type": "string" }, "retryable": { "type": "boolean" } }
                        }
                    }
                },
                "HttpStep": {
                    "type": "object",
                    "additionalProperties": false,
                    "required": ["name", "outputs", "url"],
                    "properties": {
                        "name": { "type": "string" },
                        "inputs": { "type": "array", "items": { "type": "object", "required": ["name"], "properties": { "name": { "type": "string" }, "optional": { "type": "boolean" }, "default": {} } } },
                        "outputs": { "type": "array", "items": { "type": "string" } },
                        "url": { "type": "string", "format": "uri" },
                        "map_over": { "type": "string" },
                        "parallelism": { "type": "integer", "minimum": 1 },
                        "predicate": { "type": "object" },
                        "retry": { "type": "object", "properties": { "max_attempts": { "type": "integer" }, "initial_backoff_ms": { "type": "integer" }, "max_backoff_ms": { "type": "integer" }, "jitter": { "type": "boolean" } } },
                        "timeout_ms": { "type": "integer" },
                        "mode": { "enum": ["sync", "async"] }
                    }
                },
                "StartRequest": {
                    "oneOf": [
                        { "type": "object", "required": ["kind", "goals"], "properties": { "kind": { "const": "plan" }, "goals": { "type": "array", "items": { "type": "string" } }, "inputs": { "type": "object" }, "choices": { "type": "object" }, "name": { "type": "string" } } },
                        { "type": "object", "required": ["kind", "name"], "properties": { "kind": { "const": "task_graph" }, "name": { "type": "string" }, "inputs": { "type": "object" } } },
                        { "type": "object", "required": ["kind", "name"], "properties": { "kind": { "const": "function" }, "name": { "type": "string" }, "input": {} } }
                    ]
                }
            }
        }
    })
}
