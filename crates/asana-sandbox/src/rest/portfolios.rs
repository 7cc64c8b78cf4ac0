//! Portfolios: list (by workspace and owner), create, read, update, delete, and their items
//! (projects and other portfolios, at most 1,500).

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::routing::{get, post};
use serde_json::{Map, Value, json};

use super::objects::{
    JsonBody, add_users, boolean, caller_ref, created_at, date, empty, full_record, gid, gid_of,
    in_workspace, member_workspace, name_ref, now, object, refuse, required, store, string, view,
    visible, with_options, workspace_of, workspace_user,
};
use super::{Caller, Params, body_data, compact, page};
use crate::Sandbox;
use crate::error::ApiError;
use crate::world::World;

/// Asana's cap on items in one portfolio.
const MAX_ITEMS: usize = 1_500;

/// Where a portfolio keeps its items' gids (not part of Asana's record).
const ITEMS: &str = "_sandbox_items";

/// This family's routes, relative to `/api/1.0`.
pub fn routes() -> Router<Sandbox> {
    Router::new()
        .route("/portfolios", get(list_portfolios).post(create_portfolio))
        .route(
            "/portfolios/{portfolio_gid}",
            get(get_portfolio)
                .put(update_portfolio)
                .delete(delete_portfolio),
        )
        .route("/portfolios/{portfolio_gid}/items", get(list_items))
        .route("/portfolios/{portfolio_gid}/addItem", post(add_item))
        .route("/portfolios/{portfolio_gid}/removeItem", post(remove_item))
}

fn portfolio(world: &World, caller: &Caller, portfolio_gid: &str) -> Result<Value, ApiError> {
    visible(world, caller, portfolio_gid, "portfolio", "portfolio")
}

/// Applies `input` to `portfolio`.
fn apply_fields(
    world: &World,
    caller: &Caller,
    portfolio: &mut Value,
    input: &Map<String, Value>,
) -> Result<(), ApiError> {
    let workspace = workspace_of(world, portfolio).unwrap_or_default();
    for (key, value) in input {
        match key.as_str() {
            "name" | "color" => portfolio[key.as_str()] = json!(string(value, key)?),
            "public" => {
                let public = boolean(value, key)?;
                portfolio["public"] = json!(public);
                portfolio["privacy_setting"] = json!(if public {
                    "public_to_domain"
                } else {
                    "members_only"
                });
            }
            "archived" => portfolio[key.as_str()] = json!(boolean(value, key)?),
            "start_on" | "due_on" => portfolio[key.as_str()] = date(value, key)?,
            "owner" => {
                portfolio["owner"] =
                    name_ref(&workspace_user(world, caller, value, key, &workspace)?);
            }
            _ => {}
        }
    }
    Ok(())
}

async fn list_portfolios(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    Query(params): Query<Params>,
) -> Result<Response, ApiError> {
    let workspace_gid = params
        .get("workspace")
        .cloned()
        .ok_or_else(|| ApiError::bad_request("workspace: Missing input"))?;
    let items: Vec<Value> = {
        let world = sandbox.world();
        member_workspace(&world, &caller, &workspace_gid, "workspace")?;
        let owner = match params.get("owner") {
            Some(owner) => Some(gid(&workspace_user(
                &world,
                &caller,
                &json!(owner),
                "owner",
                &workspace_gid,
            )?)),
            None => None,
        };
        world
            .all("portfolio", |p| {
                p["workspace"]["gid"] == workspace_gid.as_str()
                    && owner
                        .as_ref()
                        .is_none_or(|o| p["owner"]["gid"] == o.as_str())
            })
            .map(|p| view(&world, p, &params, compact))
            .collect()
    };
    page(&sandbox, items, &params, "/portfolios")
}

async fn create_portfolio(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    Query(params): Query<Params>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let input = body_data(&body)?;
    let params = with_options(params, &body);
    let portfolio = {
        let mut world = sandbox.world();
        let workspace_gid = gid_of(required(input, "workspace")?, "workspace")?;
        let workspace = member_workspace(&world, &caller, &workspace_gid, "workspace")?;
        string(required(input, "name")?, "name")?;
        let me = caller_ref(&world, &caller);
        let mut portfolio = json!({
            "resource_type": "portfolio",
            "name": "",
            "color": "light-green",
            "archived": false,
            "created_at": now(),
            "created_by": me,
            "owner": me,
            "members": [me],
            "workspace": name_ref(&workspace),
            "public": false,
            "privacy_setting": "members_only",
            "default_access_level": "editor",
            "start_on": null,
            "due_on": null,
            "current_status_update": null,
            "custom_fields": [],
            "custom_field_settings": [],
            "project_templates": [],
            "permalink_url": "",
            ITEMS: [],
        });
        apply_fields(&world, &caller, &mut portfolio, input)?;
        add_users(
            &world,
            &caller,
            &mut portfolio,
            input,
            "members",
            &workspace_gid,
        )?;
        world.insert(object(portfolio))
    };
    Ok(created_at(&sandbox, &portfolio, &params, "/portfolios"))
}

async fn get_portfolio(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    Path(portfolio_gid): Path<String>,
    Query(params): Query<Params>,
) -> Result<Response, ApiError> {
    let portfolio = portfolio(&sandbox.world(), &caller, &portfolio_gid)?;
    Ok(full_record(&sandbox, &portfolio, &params))
}

async fn update_portfolio(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    Path(portfolio_gid): Path<String>,
    Query(params): Query<Params>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let input = body_data(&body)?;
    refuse(input, &["workspace"])?;
    let params = with_options(params, &body);
    let portfolio = {
        let mut world = sandbox.world();
        let mut portfolio = portfolio(&world, &caller, &portfolio_gid)?;
        apply_fields(&world, &caller, &mut portfolio, input)?;
        store(&mut world, &portfolio);
        portfolio
    };
    Ok(full_record(&sandbox, &portfolio, &params))
}

async fn delete_portfolio(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    Path(portfolio_gid): Path<String>,
) -> Result<Response, ApiError> {
    let mut world = sandbox.world();
    portfolio(&world, &caller, &portfolio_gid)?;
    world.remove(&portfolio_gid);
    let holders: Vec<String> = world
        .all("portfolio", |p| item_gids(p).contains(&portfolio_gid))
        .map(gid)
        .collect();
    for holder in holders {
        if let Some(items) = world.get_mut(&holder).and_then(|p| p[ITEMS].as_array_mut()) {
            items.retain(|i| i != portfolio_gid.as_str());
        }
    }
    Ok(empty())
}

/// The gids of a portfolio's items, in order.
pub(super) fn item_gids(portfolio: &Value) -> Vec<String> {
    portfolio[ITEMS]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i.as_str().map(str::to_owned))
        .collect()
}

async fn list_items(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    Path(portfolio_gid): Path<String>,
    Query(params): Query<Params>,
) -> Result<Response, ApiError> {
    let items: Vec<Value> = {
        let world = sandbox.world();
        let portfolio = portfolio(&world, &caller, &portfolio_gid)?;
        item_gids(&portfolio)
            .iter()
            .filter_map(|g| world.get(g))
            .map(|i| view(&world, i, &params, compact))
            .collect()
    };
    page(
        &sandbox,
        items,
        &params,
        &format!("/portfolios/{portfolio_gid}/items"),
    )
}

async fn add_item(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    Path(portfolio_gid): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let input = body_data(&body)?;
    let mut world = sandbox.world();
    let mut portfolio = portfolio(&world, &caller, &portfolio_gid)?;
    let workspace = workspace_of(&world, &portfolio).unwrap_or_default();
    let item = in_workspace(
        &world,
        &caller,
        required(input, "item")?,
        &["project", "portfolio"],
        "item",
        &workspace,
    )?;
    let item_gid = gid(&item);
    if item_gid == portfolio_gid {
        return Err(ApiError::bad_request(
            "item: A portfolio cannot contain itself",
        ));
    }
    let mut items = item_gids(&portfolio);
    let anchor = |key: &str| -> Result<Option<usize>, ApiError> {
        match input.get(key).filter(|v| !v.is_null()) {
            None => Ok(None),
            Some(value) => {
                let anchor = gid_of(value, key)?;
                items
                    .iter()
                    .position(|i| *i == anchor)
                    .map(Some)
                    .ok_or_else(|| {
                        ApiError::bad_request(format!("{key}: Not an item of the portfolio"))
                    })
            }
        }
    };
    let position = match (anchor("insert_before")?, anchor("insert_after")?) {
        (Some(before), _) => Some(before),
        (None, Some(after)) => Some(after + 1),
        (None, None) => None,
    };
    if !items.contains(&item_gid) {
        if items.len() >= MAX_ITEMS {
            return Err(ApiError::bad_request(format!(
                "item: A portfolio holds at most {MAX_ITEMS} items"
            )));
        }
        match position {
            Some(index) => items.insert(index.min(items.len()), item_gid),
            None => items.push(item_gid),
        }
        portfolio[ITEMS] = json!(items);
        store(&mut world, &portfolio);
    }
    Ok(empty())
}

async fn remove_item(
    State(sandbox): State<Sandbox>,
    caller: Caller,
    Path(portfolio_gid): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let input = body_data(&body)?;
    let mut world = sandbox.world();
    let mut portfolio = portfolio(&world, &caller, &portfolio_gid)?;
    let item_gid = gid_of(required(input, "item")?, "item")?;
    let mut items = item_gids(&portfolio);
    items.retain(|i| *i != item_gid);
    portfolio[ITEMS] = json!(items);
    store(&mut world, &portfolio);
    Ok(empty())
}
