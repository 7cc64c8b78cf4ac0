//! Stories on tasks: comments created through the API, authored by the token's user, which
//! only their author may edit or delete.

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::routing::get;
use serde_json::{Map, Value, json};

use super::objects::{
    JsonBody, as_html, boolean, caller_ref, changed, created_at, empty, full_record, gid, name_ref,
    now, object, record, rich_text, store, string, view, visible, with_options,
};
use super::tasks::task_scope;
use super::{Caller, Params, body_data, page};
use crate::Sandbox;
use crate::error::ApiError;
use crate::world::World;

/// This family's routes, relative to `/api/1.0`.
pub fn routes() -> Router<Sandbox> {
    Router::new()
        .route(
            "/tasks/{task_gid}/stories",
            get(list_stories).post(create_story),
        )
        .route(
            "/stories/{story_gid}",
            get(get_story).put(update_story).delete(delete_story),
        )
}

/// A story's compact form.
fn compact_story(story: &Value) -> Value {
    let mut out = Map::new();
    for key in [
        "gid",
        "resource_type",
        "created_at",
        "created_by",
        "resource_subtype",
        "text",
        "type",
    ] {
        if let Some(value) = story.get(key) {
            out.insert(key.to_owned(), value.clone());
        }
    }
    Value::Object(out)
}

/// Where an event about a story bubbles: the story plus everything its task bubbles to.
fn story_scope(world: &World, story: &Value) -> (Vec<String>, Option<Value>) {
    let task = story["target"]["gid"]
        .as_str()
        .and_then(|g| world.get(g))
        .cloned();
    let mut scope = vec![gid(story)];
    if let Some(task) = &task {
        scope.extend(task_scope(task));
    }
    (scope, task)
}

/// `text` and `html_text` from a request: one of them, kept in step.
fn comment_text(input: &Map<String, Value>) -> Result<Option<(String, String)>, ApiError> {
    if let Some(html) = input.get("html_text").filter(|h| !h.is_null()) {
        let text = rich_text(html, "html_text")?;
        return Ok(Some((text, string(html, "html_text")?)));
    }
    if let Some(text) = input.get("text").filter(|t| !t.is_null()) {
        let text = string(text, "text")?;
        let html = as_html(&text);
        return Ok(Some((text, html)));
    }
    Ok(None)
}

async fn list_stories(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    Path(task_gid): Path<String>,
    Query(params): Query<Params>,
) -> Result<Response, ApiError> {
    let items: Vec<Value> = {
        let world = sandbox.world();
        visible(&world, &caller, &task_gid, "task", "task")?;
        world
            .all("story", |s| s["target"]["gid"] == task_gid.as_str())
            .map(|s| view(&world, s, &params, compact_story))
            .collect()
    };
    page(
        &sandbox,
        items,
        &params,
        &format!("/tasks/{task_gid}/stories"),
    )
}

async fn create_story(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    Path(task_gid): Path<String>,
    Query(params): Query<Params>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let input = body_data(&body)?;
    let params = with_options(params, &body);
    let story = {
        let mut world = sandbox.world();
        let task = visible(&world, &caller, &task_gid, "task", "task")?;
        let (text, html) =
            comment_text(input)?.ok_or_else(|| ApiError::bad_request("text: Missing input"))?;
        let is_pinned = match input.get("is_pinned") {
            None | Some(Value::Null) => false,
            Some(value) => boolean(value, "is_pinned")?,
        };
        let author = caller_ref(&world, &caller);
        let mut story = json!({
            "resource_type": "story",
            "resource_subtype": "comment_added",
            "type": "comment",
            "text": text,
            "html_text": html,
            "is_pinned": is_pinned,
            "is_edited": false,
            "is_editable": true,
            "created_at": now(),
            "created_by": author,
            "source": "api",
            "target": name_ref(&task),
            "hearted": false,
            "hearts": [],
            "num_hearts": 0,
            "liked": false,
            "likes": [],
            "num_likes": 0,
        });
        if let Some(sticker) = input.get("sticker_name").filter(|s| !s.is_null()) {
            story["sticker_name"] = json!(string(sticker, "sticker_name")?);
        }
        let story = world.insert(object(story));
        let (scope, _) = story_scope(&world, &story);
        record(
            &mut world,
            &caller,
            "added",
            &story,
            Some(&task),
            None,
            scope,
        );
        story
    };
    sandbox.notify_changed();
    Ok(created_at(&sandbox, &story, &params, "/stories"))
}

async fn get_story(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    Path(story_gid): Path<String>,
    Query(params): Query<Params>,
) -> Result<Response, ApiError> {
    let story = visible(&sandbox.world(), &caller, &story_gid, "story", "story")?;
    Ok(full_record(&sandbox, &story, &params))
}

/// Whether the caller wrote `story`.
fn authored(caller: &Caller, story: &Value) -> bool {
    story["created_by"]["gid"] == caller.user_gid.as_str()
}

async fn update_story(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    Path(story_gid): Path<String>,
    Query(params): Query<Params>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let input = body_data(&body)?;
    let params = with_options(params, &body);
    let story = {
        let mut world = sandbox.world();
        let mut story = visible(&world, &caller, &story_gid, "story", "story")?;
        let mut changes = Vec::new();
        if let Some((text, html)) = comment_text(input)? {
            if story["resource_subtype"] != "comment_added" {
                return Err(ApiError::bad_request(
                    "text: Only comment stories can have their text updated",
                ));
            }
            if !authored(&caller, &story) {
                return Err(ApiError::forbidden("You can only edit comments you wrote"));
            }
            if story["text"] != text.as_str() {
                story["text"] = json!(text);
                story["html_text"] = json!(html);
                story["is_edited"] = json!(true);
                changes.push(changed("text", &story["text"]));
            }
        }
        if let Some(value) = input.get("is_pinned") {
            let pinned = json!(boolean(value, "is_pinned")?);
            if story["is_pinned"] != pinned {
                story["is_pinned"] = pinned.clone();
                changes.push(changed("is_pinned", &pinned));
            }
        }
        if !changes.is_empty() {
            store(&mut world, &story);
            let (scope, task) = story_scope(&world, &story);
            for change in changes {
                record(
                    &mut world,
                    &caller,
                    "changed",
                    &story,
                    task.as_ref(),
                    Some(change),
                    scope.clone(),
                );
            }
        }
        story
    };
    sandbox.notify_changed();
    Ok(full_record(&sandbox, &story, &params))
}

async fn delete_story(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    Path(story_gid): Path<String>,
) -> Result<Response, ApiError> {
    {
        let mut world = sandbox.world();
        let story = visible(&world, &caller, &story_gid, "story", "story")?;
        if !authored(&caller, &story) {
            return Err(ApiError::forbidden(
                "You can only delete stories you created",
            ));
        }
        let (scope, task) = story_scope(&world, &story);
        record(
            &mut world,
            &caller,
            "deleted",
            &story,
            task.as_ref(),
            None,
            scope,
        );
        world.remove(&story_gid);
    }
    sandbox.notify_changed();
    Ok(empty())
}
