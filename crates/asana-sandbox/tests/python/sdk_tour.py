#!/usr/bin/env python3
"""A tour of the Asana REST API with the official Python SDK (`asana` 5.x).

Run against the sandbox behind Stoplight Prism (`prism proxy --errors`), every request and
response of the tour is checked against Asana's OpenAPI spec: Prism answers a request that
violates it with 422 and a response that violates it with 500, both with an `sl-violations`
header, and the SDK raises `ApiException` for them. The tour records every HTTP exchange and
classifies each step:

- ok: the SDK call succeeded (or failed with the status the step expects);
- violation: Prism reported a violation (the details are in the step);
- unimplemented: the sandbox answered its router's 404 `Not found` (it has no such route);
- error: anything else (an unexpected status, or an SDK-side failure).

A step that does not succeed stops the rest of its family (later steps may need its result).
Prints one JSON document on stdout; exits 1 when any step is not ok: the sandbox implements
every operation of the tour.

    sdk_tour.py --host http://127.0.0.1:4010 --token sandbox-pat-alice
"""

import argparse
import json
import sys
import traceback
import uuid
from urllib.parse import urlencode, urlsplit

import asana
from asana.rest import ApiException, RESTResponse
from urllib3.util.retry import Retry


class Stop(Exception):
    """Ends the current family: a step did not succeed."""


def _text(data):
    if data is None:
        return ""
    if isinstance(data, bytes):
        return data.decode("utf-8", "replace")
    return str(data)


def _json(text):
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return None


class Tour:
    """The SDK client, a log of every HTTP exchange, and the steps taken."""

    def __init__(self, host, token):
        configuration = asana.Configuration()
        configuration.host = host
        configuration.access_token = token
        # The SDK retries 5xx with backoff by default; Prism's violations are 500s.
        configuration.retry_strategy = Retry(total=0)
        self.client = asana.ApiClient(configuration)
        self.exchanges = []
        self.steps = []
        self.family = None
        rest = self.client.rest_client
        original = rest.request

        def without_body(method, url, query_params=None, headers=None, **_):
            # The SDK sends `{}` as the body of every DELETE. The spec's DELETE operations
            # take no body, so Prism refuses that with 422 before the sandbox sees it (the
            # sandbox, like Asana, accepts it: tests/integration/spec.rs checks that). Sent without a
            # body, the rest of the exchange is still checked.
            if query_params:
                url += "?" + urlencode(query_params)
            headers = {k: v for k, v in (headers or {}).items() if k.lower() != "content-type"}
            response = RESTResponse(rest.pool_manager.request(method, url, headers=headers))
            if not 200 <= response.status <= 299:
                raise ApiException(http_resp=response)
            return response

        def recorded(method, url, *args, **kwargs):
            split = urlsplit(url)
            exchange = {"method": method, "path": split.path}
            self.exchanges.append(exchange)
            send = without_body if method.upper() == "DELETE" else original
            try:
                response = send(method, url, *args, **kwargs)
            except ApiException as error:
                headers = error.headers or {}
                exchange["status"] = error.status
                exchange["violations"] = _json(headers.get("sl-violations"))
                exchange["body"] = _json(_text(error.body)) or _text(error.body)[:2000]
                raise
            exchange["status"] = response.status
            exchange["violations"] = _json(response.getheader("sl-violations"))
            return response

        rest.request = recorded

    def api(self, name):
        return getattr(asana, name)(self.client)

    def step(self, name, call, expect=None):
        """Runs one SDK call and returns its result. Raises Stop after recording why not."""
        first = len(self.exchanges)
        record = {"family": self.family, "step": name}
        self.steps.append(record)
        try:
            result = call()
            if hasattr(result, "__next__"):
                result = list(result)
            error = None
        except ApiException as caught:
            error = caught
            result = None
        except Exception:  # noqa: BLE001 - any SDK-side failure is a finding
            record["outcome"] = "error"
            record["detail"] = traceback.format_exc(limit=3)
            raise Stop() from None
        exchanges = self.exchanges[first:]
        record["requests"] = [
            f"{e['method']} {e['path']} -> {e.get('status')}" for e in exchanges
        ]
        violations = [
            {"request": f"{e['method']} {e['path']}", "status": e.get("status"),
             "violations": e.get("violations"), "body": e.get("body")}
            for e in exchanges
            if e.get("violations") or e.get("status") == 422
        ]
        if violations:
            record["outcome"] = "violation"
            record["detail"] = violations
            raise Stop()
        if error is not None:
            body = _json(_text(error.body)) or {}
            message = ((body.get("errors") or [{}])[0] or {}).get("message")
            if error.status == 404 and message == "Not found":
                record["outcome"] = "unimplemented"
                raise Stop()
            if expect is not None and error.status == expect:
                record["outcome"] = "ok"
                record["expected_status"] = expect
                return body
            record["outcome"] = "error"
            record["detail"] = {"status": error.status, "body": body or _text(error.body)[:2000]}
            raise Stop()
        record["outcome"] = "ok"
        return result

    def run(self, family, tour):
        self.family = family
        try:
            tour()
        except Stop:
            pass

    def report(self):
        outcomes = {}
        for step in self.steps:
            outcomes[step["outcome"]] = outcomes.get(step["outcome"], 0) + 1
        return {
            "requests": len(self.exchanges),
            "outcomes": outcomes,
            "operations": sorted({f"{e['method']} {e['path']}" for e in self.exchanges}),
            "steps": self.steps,
            "violations": [s for s in self.steps if s["outcome"] == "violation"],
            "errors": [s for s in self.steps if s["outcome"] == "error"],
            "unimplemented": [s["family"] + ": " + s["step"]
                              for s in self.steps if s["outcome"] == "unimplemented"],
        }


def tour(t):
    """Every family of the REST surface a client commonly uses, in dependency order."""
    suffix = uuid.uuid4().hex[:8]
    users = t.api("UsersApi")
    workspaces = t.api("WorkspacesApi")
    state = {}

    def identity():
        me = t.step("get me", lambda: users.get_user("me", {"opt_fields": "name,email,workspaces"}))
        state["me"] = me["gid"]
        t.step("get user by gid", lambda: users.get_user(me["gid"], {}))
        found = t.step("list workspaces, one per page",
                       lambda: workspaces.get_workspaces({"limit": 1}))
        state["workspace"] = found[0]["gid"]
        t.step("get workspace", lambda: workspaces.get_workspace(state["workspace"], {}))
        t.step("list workspace users",
               lambda: users.get_users_for_workspace(state["workspace"], {"opt_fields": "name,email"}))
        t.step("get workspace user",
               lambda: users.get_user_for_workspace(state["workspace"], "me", {}))
        t.step("list users", lambda: users.get_users({"workspace": state["workspace"], "limit": 2}))

    t.run("users and workspaces", identity)
    if "workspace" not in state:
        return
    workspace = state["workspace"]

    def teams():
        api = t.api("TeamsApi")
        found = t.step("list workspace teams", lambda: api.get_teams_for_workspace(workspace, {}))
        if found:
            team = found[0]["gid"]
            state["team"] = team
            t.step("get team", lambda: api.get_team(team, {}))
            t.step("list team users", lambda: t.api("UsersApi").get_users_for_team(team, {}))
        t.step("list my teams", lambda: api.get_teams_for_user("me", workspace, {}))

    t.run("teams", teams)

    def projects():
        api = t.api("ProjectsApi")
        t.step("list projects", lambda: api.get_projects({"workspace": workspace, "limit": 5}))
        data = {"name": f"Tour {suffix}", "workspace": workspace, "notes": "from sdk_tour.py"}
        if "team" in state:
            data["team"] = state["team"]
        project = t.step("create project", lambda: api.create_project({"data": data}, {}))
        state["project"] = project["gid"]
        t.step("get project", lambda: api.get_project(project["gid"], {}))
        t.step("update project",
               lambda: api.update_project({"data": {"notes": "updated", "color": "light-green"}},
                                          project["gid"], {}))
        t.step("list workspace projects",
               lambda: api.get_projects_for_workspace(workspace, {"limit": 5}))

    t.run("projects", projects)

    def sections():
        api = t.api("SectionsApi")
        project = state["project"]
        section = t.step("create section", lambda: api.create_section_for_project(
            project, {"body": {"data": {"name": "Doing"}}}))
        state["section"] = section["gid"]
        t.step("list sections", lambda: api.get_sections_for_project(project, {}))
        t.step("get section", lambda: api.get_section(section["gid"], {}))
        t.step("rename section", lambda: api.update_section(
            section["gid"], {"body": {"data": {"name": "In progress"}}}))
        spare = t.step("create spare section", lambda: api.create_section_for_project(
            project, {"body": {"data": {"name": "Spare"}}}))
        t.step("delete spare section", lambda: api.delete_section(spare["gid"]))

    if "project" in state:
        t.run("sections", sections)

    def tasks():
        api = t.api("TasksApi")
        data = {"name": f"Tour task {suffix}", "notes": "n", "workspace": workspace}
        if "project" in state:
            data["projects"] = [state["project"]]
        task = t.step("create task", lambda: api.create_task({"data": data}, {}))
        state["task"] = task["gid"]
        t.step("get task", lambda: api.get_task(
            task["gid"], {"opt_fields": "name,notes,assignee,projects,memberships.section"}))
        t.step("update task", lambda: api.update_task(
            {"data": {"completed": True, "due_on": "2030-01-31", "assignee": "me"}},
            task["gid"], {}))
        other = t.step("create second task",
                       lambda: api.create_task({"data": {"name": "Blocker", "workspace": workspace}}, {}))
        state["other_task"] = other["gid"]
        if "project" in state:
            project = state["project"]
            t.step("list tasks by project", lambda: api.get_tasks({"project": project, "limit": 10}))
            t.step("list project tasks", lambda: api.get_tasks_for_project(project, {}))
        t.step("list my tasks in workspace",
               lambda: api.get_tasks({"assignee": "me", "workspace": workspace, "limit": 10}))
        if "section" in state:
            section = state["section"]
            t.step("move task into section", lambda: t.api("SectionsApi").add_task_for_section(
                section, {"body": {"data": {"task": task["gid"]}}}))
            t.step("list section tasks", lambda: api.get_tasks_for_section(section, {}))
        t.step("create subtask", lambda: api.create_subtask_for_task(
            {"data": {"name": "Sub"}}, task["gid"], {}))
        t.step("list subtasks", lambda: api.get_subtasks_for_task(task["gid"], {}))
        t.step("add followers", lambda: api.add_followers_for_task(
            {"data": {"followers": ["me"]}}, task["gid"], {}))
        t.step("remove followers", lambda: api.remove_follower_for_task(
            {"data": {"followers": ["me"]}}, task["gid"], {}))
        t.step("add dependency", lambda: api.add_dependencies_for_task(
            {"data": {"dependencies": [other["gid"]]}}, task["gid"]))
        t.step("list dependencies", lambda: api.get_dependencies_for_task(task["gid"], {}))
        t.step("list dependents", lambda: api.get_dependents_for_task(other["gid"], {}))
        t.step("remove dependency", lambda: api.remove_dependencies_for_task(
            {"data": {"dependencies": [other["gid"]]}}, task["gid"]))
        t.step("list task projects",
               lambda: t.api("ProjectsApi").get_projects_for_task(task["gid"], {}))
        # A Python bool would go out as `completed=True`, which the spec (and the sandbox)
        # refuse: query booleans are `true`/`false`.
        t.step("search tasks", lambda: api.search_tasks_for_workspace(
            workspace, {"text": "Tour", "completed": "true"}))

    t.run("tasks", tasks)

    def stories():
        api = t.api("StoriesApi")
        task = state["task"]
        story = t.step("comment on task",
                       lambda: api.create_story_for_task({"data": {"text": "Looks good"}}, task, {}))
        t.step("list stories", lambda: api.get_stories_for_task(task, {}))
        t.step("get story", lambda: api.get_story(story["gid"], {}))
        t.step("edit comment",
               lambda: api.update_story({"data": {"text": "Looks great"}}, story["gid"], {}))
        t.step("delete comment", lambda: api.delete_story(story["gid"]))

    if "task" in state:
        t.run("stories", stories)

    def tags():
        api = t.api("TagsApi")
        tag = t.step("create tag", lambda: api.create_tag(
            {"data": {"name": f"tour-{suffix}", "workspace": workspace, "color": "dark-red"}}, {}))
        t.step("get tag", lambda: api.get_tag(tag["gid"], {}))
        t.step("list tags", lambda: api.get_tags({"workspace": workspace}))
        t.step("list workspace tags", lambda: api.get_tags_for_workspace(workspace, {}))
        t.step("update tag", lambda: api.update_tag({"data": {"name": f"tour2-{suffix}"}}, tag["gid"], {}))
        if "task" in state:
            tasks_api = t.api("TasksApi")
            task = state["task"]
            t.step("tag task", lambda: tasks_api.add_tag_for_task({"data": {"tag": tag["gid"]}}, task))
            t.step("list task tags", lambda: api.get_tags_for_task(task, {}))
            t.step("list tag tasks", lambda: tasks_api.get_tasks_for_tag(tag["gid"], {}))
            t.step("untag task",
                   lambda: tasks_api.remove_tag_for_task({"data": {"tag": tag["gid"]}}, task))
        t.step("delete tag", lambda: api.delete_tag(tag["gid"]))

    t.run("tags", tags)

    def custom_fields():
        api = t.api("CustomFieldsApi")
        field = t.step("create custom field", lambda: api.create_custom_field(
            {"data": {"name": f"Tour {suffix}", "workspace": workspace,
                      "resource_subtype": "enum",
                      "enum_options": [{"name": "Low"}, {"name": "High"}]}}, {}))
        t.step("get custom field", lambda: api.get_custom_field(field["gid"], {}))
        t.step("list workspace custom fields",
               lambda: api.get_custom_fields_for_workspace(workspace, {}))
        t.step("add enum option", lambda: api.create_enum_option_for_custom_field(
            field["gid"], {"body": {"data": {"name": "Medium"}}}))

    t.run("custom fields", custom_fields)

    def status_updates():
        api = t.api("StatusUpdatesApi")
        project = state["project"]
        update = t.step("post status update", lambda: api.create_status_for_object(
            {"data": {"parent": project, "status_type": "on_track", "text": "All good",
                      "title": "Week 1"}}, {}))
        t.step("list status updates", lambda: api.get_statuses_for_object(project, {}))
        t.step("get status update", lambda: api.get_status(update["gid"], {}))
        t.step("delete status update", lambda: api.delete_status(update["gid"]))

    if "project" in state:
        t.run("status updates", status_updates)

    def goals():
        api = t.api("GoalsApi")
        t.step("list goals", lambda: api.get_goals({"workspace": workspace}))
        goal = t.step("create goal", lambda: api.create_goal(
            {"data": {"name": f"Tour goal {suffix}", "workspace": workspace}}, {}))
        t.step("get goal", lambda: api.get_goal(goal["gid"], {}))
        t.step("update goal", lambda: api.update_goal({"data": {"notes": "n"}}, goal["gid"], {}))
        t.step("delete goal", lambda: api.delete_goal(goal["gid"]))

    t.run("goals", goals)

    def portfolios():
        api = t.api("PortfoliosApi")
        t.step("list portfolios", lambda: api.get_portfolios(workspace, {"owner": "me"}))
        portfolio = t.step("create portfolio", lambda: api.create_portfolio(
            {"data": {"name": f"Tour {suffix}", "workspace": workspace}}, {}))
        t.step("get portfolio", lambda: api.get_portfolio(portfolio["gid"], {}))
        if "project" in state:
            t.step("add portfolio item", lambda: api.add_item_for_portfolio(
                {"data": {"item": state["project"]}}, portfolio["gid"]))
            t.step("list portfolio items", lambda: api.get_items_for_portfolio(portfolio["gid"], {}))
            t.step("remove portfolio item", lambda: api.remove_item_for_portfolio(
                {"data": {"item": state["project"]}}, portfolio["gid"]))
        t.step("delete portfolio", lambda: api.delete_portfolio(portfolio["gid"]))

    t.run("portfolios", portfolios)

    def time_tracking():
        api = t.api("TimeTrackingEntriesApi")
        task = state["task"]
        entry = t.step("track time", lambda: api.create_time_tracking_entry(
            {"data": {"duration_minutes": 30, "entered_on": "2030-01-02"}}, task, {}))
        t.step("list task time entries", lambda: api.get_time_tracking_entries_for_task(task, {}))
        t.step("get time entry", lambda: api.get_time_tracking_entry(entry["gid"], {}))
        t.step("delete time entry", lambda: api.delete_time_tracking_entry(entry["gid"]))

    if "task" in state:
        t.run("time tracking", time_tracking)

    def allocations():
        api = t.api("AllocationsApi")
        project = state["project"]
        t.step("list allocations", lambda: api.get_allocations({"parent": project}))
        allocation = t.step("allocate effort", lambda: api.create_allocation(
            {"data": {"assignee": "me", "parent": project, "start_date": "2030-01-01",
                      "end_date": "2030-01-31", "effort": {"type": "hours", "value": 10}}}, {}))
        t.step("get allocation", lambda: api.get_allocation(allocation["gid"], {}))
        t.step("update allocation", lambda: api.update_allocation(
            {"data": {"effort": {"type": "hours", "value": 12}}}, allocation["gid"], {}))
        t.step("delete allocation", lambda: api.delete_allocation(allocation["gid"]))

    if "project" in state:
        t.run("allocations", allocations)

    def batch():
        api = t.api("BatchAPIApi")
        t.step("batch two reads", lambda: api.create_batch_request({"data": {"actions": [
            {"relative_path": "/users/me", "method": "get"},
            {"relative_path": f"/workspaces/{workspace}", "method": "get",
             "options": {"fields": ["name"]}},
        ]}}, {}))

    t.run("batch", batch)

    def events():
        api = t.api("EventsApi")
        resource = state.get("project") or state.get("task")
        # The first call has no sync token: Asana answers 412 with a fresh one.
        first = t.step("events without sync token",
                       lambda: api.get_events(resource, {}, full_payload=True), expect=412)
        sync = first.get("sync") if isinstance(first, dict) else None
        if sync:
            t.step("events with sync token",
                   lambda: api.get_events(resource, {"sync": sync}, full_payload=True))

    if "project" in state or "task" in state:
        t.run("events", events)

    def typeahead():
        api = t.api("TypeaheadApi")
        t.step("typeahead users",
               lambda: api.typeahead_for_workspace(workspace, "user", {"query": "a", "count": 5}))

    t.run("typeahead", typeahead)

    def webhooks():
        api = t.api("WebhooksApi")
        t.step("list webhooks", lambda: api.get_webhooks(workspace, {}))

    t.run("webhooks", webhooks)

    def cleanup():
        tasks_api = t.api("TasksApi")
        for key in ("task", "other_task"):
            if key in state:
                gid = state[key]
                t.step(f"delete {key.replace('_', ' ')}", lambda: tasks_api.delete_task(gid))
        if "project" in state:
            t.step("delete project", lambda: t.api("ProjectsApi").delete_project(state["project"]))

    t.run("cleanup", cleanup)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", required=True, help="API base URL, e.g. http://127.0.0.1:4010")
    parser.add_argument("--token", required=True, help="a personal access token")
    args = parser.parse_args()
    t = Tour(args.host, args.token)
    tour(t)
    report = t.report()
    json.dump(report, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 1 if report["violations"] or report["errors"] or report["unimplemented"] else 0


if __name__ == "__main__":
    sys.exit(main())
