/*
 * Cockpit's Hooks page of libvirt-bridge (docs/cockpit.md).
 *
 * Plain JavaScript, no build step: everything it shows or changes comes from
 * `libvirt-bridge` commands run with cockpit.spawn, with JSON output. Commands run with
 * superuser "try": Cockpit's login and its administrative access switch decide what may
 * change; the bridge itself refuses what a user may not do, and the page shows why.
 */
"use strict";

const _ = cockpit.gettext;

// How to run the bridge: the manifest of a page that `libvirt-bridge install` wrote from a
// venv names the command and the installation's --config and --confdir (sudo drops PATH
// and the environment); the Debian package's manifest names none: /usr/bin's, by its rule.
const bridge = { command: ["libvirt-bridge"], options: [] };

// The dry run's view of which events a device event is: they need --device.
const DEVICE_EVENT = /^(before|after)_(device|nic|disk|memory|update)_/;

let domains = [];
let timeline = null; // the running `history --follow` process, and whether we closed it

/* -- running the bridge ----------------------------------------------------------------- */

// Resolves {status, out, message} once the command has ended, whatever its exit status
// (status and check-props exit 1 with a complete answer); rejects only when it could
// not run at all.
function runBridge(args) {
    const argv = [...bridge.command, args[0], ...bridge.options, ...args.slice(1)];
    return new Promise((resolve, reject) => {
        cockpit.spawn(argv, { superuser: "try", err: "message" })
                .then(out => resolve({ status: 0, out, message: "" }),
                      (ex, out) => {
                          if (ex.exit_status === null || ex.exit_status === undefined)
                              reject(ex);
                          else
                              resolve({ status: ex.exit_status, out: out || "", message: ex.message || "" });
                      });
    });
}

async function runJson(args) {
    const result = await runBridge(args);
    if (result.out.trim() === "")
        throw new Error(result.message || cockpit.format(_("libvirt-bridge $0 printed nothing"), args[0]));
    return JSON.parse(result.out);
}

async function loadManifest() {
    try {
        const response = await fetch("manifest.json");
        const own = (await response.json())["libvirt-bridge"];
        if (own && Array.isArray(own.command) && own.command.length) {
            bridge.command = own.command;
            bridge.options = Array.isArray(own.options) ? own.options : [];
        }
    } catch (ex) {
        console.warn("manifest.json:", ex);
    }
}

/* -- small DOM helpers ------------------------------------------------------------------ */

function el(tag, props, ...children) {
    const node = document.createElement(tag);
    const { dataset, role, ...rest } = props || {};
    Object.assign(node, rest);
    Object.assign(node.dataset, dataset || {});
    if (role)
        node.setAttribute("role", role);
    for (const child of children)
        node.append(child);
    return node;
}

function showError(id, message) {
    const node = document.getElementById(id);
    node.textContent = message || "";
    node.hidden = !message;
}

function errorText(ex) {
    return (ex && (ex.message || ex.problem)) || String(ex);
}

/* -- the theme: the shell's choice, as Cockpit's own pages follow it -------------------- */

function applyTheme() {
    const style = localStorage.getItem("shell:style") || "auto";
    const dark = style === "dark" ||
        (style === "auto" && window.matchMedia("(prefers-color-scheme: dark)").matches);
    document.documentElement.classList.toggle("pf-theme-dark", dark);
}

/* -- the views --------------------------------------------------------------------------- */

function showView(view) {
    for (const button of document.querySelectorAll(".lb-tabs button")) {
        const selected = button.dataset.view === view;
        button.setAttribute("aria-selected", String(selected));
        document.getElementById("view-" + button.dataset.view).hidden = !selected;
    }
}

function route() {
    const path = cockpit.location.path;
    const view = ["host", "vm", "dryrun"].includes(path[0]) ? path[0] : "host";
    showView(view);
    if (view === "vm" && path[1] && domains.some(d => d.name === path[1])) {
        const select = document.getElementById("vm-select");
        if (select.value !== path[1]) {
            select.value = path[1];
            loadDomain(path[1]);
        }
    }
}

/* -- host: status, listener, event directories ------------------------------------------ */

const LEVEL_LABELS = { ok: _("OK"), note: _("Note"), problem: _("Problem") };
const LISTENER_STATES = {
    connected: _("Connected"),
    "not connected": _("Not connected"),
    "not running": _("Not running"),
    "not installed": _("Not installed (a choice: install --no-listener)"),
    unknown: _("Unknown"),
};

async function loadStatus() {
    const summary = document.getElementById("status-summary");
    const list = document.getElementById("status-checks");
    summary.textContent = _("Checking…");
    let report;
    try {
        report = await runJson(["status", "--json"]);
    } catch (ex) {
        summary.textContent = errorText(ex);
        summary.className = "lb-summary lb-error";
        return;
    }
    summary.className = "lb-summary " + (report.ok ? "lb-ok" : "lb-error");
    summary.textContent = report.ok
        ? _("All is well")
        : cockpit.format(cockpit.ngettext("$0 problem", "$0 problems", report.problems), report.problems);
    // Problems first: they are what the page is opened for.
    const order = { problem: 0, note: 1, ok: 2 };
    const checks = [...report.checks].sort((a, b) => order[a.level] - order[b.level]);
    list.replaceChildren(...checks.map(check => {
        const item = el("li", { className: "lb-check lb-" + check.level },
                        el("span", { className: "lb-level", textContent: LEVEL_LABELS[check.level] }),
                        el("span", { className: "lb-message", textContent: check.message }));
        if (check.fix)
            item.append(el("div", { className: "lb-fix" },
                           el("span", { textContent: _("Fix:") + " " }),
                           el("code", { textContent: check.fix })));
        return item;
    }));
    const listener = report.listener;
    const state = document.getElementById("listener-state");
    const label = LISTENER_STATES[listener.state] || listener.state;
    state.className = listener.state === "connected" ? "lb-ok" : "lb-error";
    state.textContent = listener.pid ? cockpit.format(_("$0 (pid $1)"), label, listener.pid) : label;
    if (listener.detail)
        state.append(el("span", { className: "lb-muted", textContent: " — " + listener.detail }));
}

async function loadScripts() {
    const body = document.querySelector("#scripts-table tbody");
    const empty = document.getElementById("scripts-empty");
    let events;
    try {
        events = await runJson(["list", "--json"]);
    } catch (ex) {
        empty.hidden = false;
        empty.textContent = errorText(ex);
        return;
    }
    const rows = [];
    for (const [event, scripts] of Object.entries(events)) {
        for (const [name, entry] of Object.entries(scripts)) {
            rows.push(el("tr", {},
                         el("td", { textContent: event }),
                         el("td", { textContent: name }),
                         el("td", {}, el("code", { textContent: entry.path })),
                         el("td", { className: "lb-hash", textContent: entry.checksum || _("(unreadable)") })));
        }
    }
    body.replaceChildren(...rows);
    empty.hidden = rows.length > 0;
    empty.textContent = _("No script would run: every event directory is empty.");
    const datalist = document.getElementById("dryrun-events");
    datalist.replaceChildren(...Object.keys(events).map(event => el("option", { value: event })));
    const input = document.getElementById("dryrun-event");
    if (!input.value && Object.keys(events).length)
        input.value = Object.keys(events)[0];
}

/* -- virtual machines ------------------------------------------------------------------- */

async function loadDomains() {
    try {
        domains = await runJson(["list", "--domains", "--json"]);
    } catch (ex) {
        domains = [];
        document.getElementById("vm-state").textContent = errorText(ex);
    }
    for (const id of ["vm-select", "dryrun-vm"]) {
        const select = document.getElementById(id);
        const chosen = select.value;
        select.replaceChildren(...domains.map(d => el("option", { value: d.name, textContent: d.name })));
        if (domains.some(d => d.name === chosen))
            select.value = chosen;
    }
    const select = document.getElementById("vm-select");
    if (select.value)
        await loadDomain(select.value);
}

async function loadDomain(name) {
    const domain = domains.find(d => d.name === name);
    document.getElementById("vm-state").textContent = domain ? domain.state : "";
    followTimeline(name);
    await Promise.all([loadVmProps(name), loadDeviceProps(name)]);
}

// One editable table of properties: remove buttons per row and a NAME=VALUE form. `device`
// is the --device ID, or null for the VM's own.
function propertiesEditor(domain, device, properties) {
    const box = el("div", { className: "lb-props" });
    const error = el("p", { className: "lb-error", role: "alert", hidden: true });
    const rows = Object.entries(properties).map(([name, value]) => {
        const remove = el("button", { type: "button", className: "lb-link", textContent: _("Remove") });
        remove.setAttribute("aria-label", cockpit.format(_("Remove $0"), name));
        remove.addEventListener("click", () => changeProperty(domain, device, ["unset", name], error));
        return el("tr", { dataset: { name } },
                  el("td", {}, el("code", { textContent: name })),
                  el("td", { className: "lb-value", textContent: value }),
                  el("td", {}, remove));
    });
    if (rows.length) {
        box.append(el("table", { className: "lb-table lb-props-table" },
                      el("thead", {}, el("tr", {},
                                         el("th", { textContent: _("Name") }),
                                         el("th", { textContent: _("Value") }),
                                         el("th", {}))),
                      el("tbody", {}, ...rows)));
    } else {
        box.append(el("p", { className: "lb-muted", textContent: _("No custom properties") }));
    }
    const input = el("input", { className: "lb-assignment", placeholder: _("NAME=VALUE"), required: true });
    input.setAttribute("aria-label", _("Property to set, as NAME=VALUE"));
    const form = el("form", { className: "lb-form" }, input,
                    el("button", { type: "submit", textContent: _("Set") }));
    form.addEventListener("submit", event => {
        event.preventDefault();
        changeProperty(domain, device, ["set", input.value], error);
    });
    box.append(form, error);
    return box;
}

// props DOMAIN [--device ID] set|unset ...; a refusal (the schema's, a bad name: exit 2)
// shows the command's own message under the form.
async function changeProperty(domain, device, action, errorNode) {
    const args = ["props", domain, ...(device ? ["--device", device] : []), ...action];
    errorNode.hidden = true;
    let result;
    try {
        result = await runBridge(args);
    } catch (ex) {
        result = { status: -1, message: errorText(ex) };
    }
    if (result.status !== 0) {
        errorNode.textContent = result.message || cockpit.format(_("libvirt-bridge props failed ($0)"), result.status);
        errorNode.hidden = false;
        return false;
    }
    await (device ? loadDeviceProps(domain) : loadVmProps(domain));
    return true;
}

async function loadVmProps(domain) {
    const box = document.getElementById("vm-props");
    try {
        const properties = await runJson(["props", domain, "get", "--json"]);
        box.replaceChildren(propertiesEditor(domain, null, properties));
    } catch (ex) {
        box.replaceChildren(el("p", { className: "lb-error", textContent: errorText(ex) }));
    }
}

async function loadDeviceProps(domain) {
    const box = document.getElementById("device-props");
    let entries;
    try {
        entries = await runJson(["props", domain, "devices", "--json"]);
    } catch (ex) {
        box.replaceChildren(el("p", { className: "lb-error", textContent: errorText(ex) }));
        return;
    }
    if (!entries.length) {
        box.replaceChildren(el("p", { className: "lb-muted", textContent: _("No device has custom properties") }));
        return;
    }
    box.replaceChildren(...entries.map(entry => {
        // The running VM's properties when it runs, else the next start's.
        const which = entry.properties.live || entry.properties.persistent || {};
        const present = Object.keys(entry.present || {}).length > 0;
        const title = el("h3", {}, el("span", { textContent: entry.device }),
                         el("span", {
                             className: "lb-muted",
                             textContent: " (" + entry.id + ")" + (present ? "" : " — " + _("not plugged")),
                         }));
        return el("section", { className: "lb-device", dataset: { device: entry.id } },
                  title, propertiesEditor(domain, entry.id, which));
    }));
}

/* -- the timeline: `history DOMAIN --json --follow`, one JSON object a line -------------- */

const TIMELINE_ROWS = 200;

function timelineRow(run) {
    const when = new Date(run.time);
    const outcome = el("td", { className: run.outcome === "ok" ? "lb-ok" : "lb-error", textContent: run.outcome });
    if (run.rc !== null && run.rc !== undefined && run.outcome !== "ok")
        outcome.textContent += " (rc " + run.rc + ")";
    if (run.xml_changed)
        outcome.append(el("span", { className: "lb-muted", textContent: " · " + _("XML changed") }));
    const script = el("td", {}, el("code", { textContent: run.script.split("/").pop() }));
    script.title = run.script;
    if (run.stderr)
        script.append(el("pre", { className: "lb-stderr", textContent: run.stderr }));
    return el("tr", { className: "lb-run" },
              el("td", { textContent: isNaN(when) ? run.time : when.toLocaleString(), title: run.time }),
              el("td", { textContent: run.event }),
              el("td", { textContent: run.source }),
              script,
              outcome,
              el("td", { textContent: cockpit.format(_("$0 s"), Number(run.duration).toFixed(3)) }));
}

function followTimeline(domain) {
    if (timeline) {
        timeline.closed = true;
        timeline.process.close("terminated");
    }
    const body = document.querySelector("#timeline tbody");
    const state = document.getElementById("timeline-state");
    body.replaceChildren();
    showError("timeline-error", "");
    state.textContent = _("Following…");
    const argv = [...bridge.command, "history", ...bridge.options, domain, "--json", "--follow"];
    const current = { closed: false, process: cockpit.spawn(argv, { superuser: "try", err: "message" }) };
    timeline = current;
    let pending = "";
    current.process.stream(chunk => {
        const lines = (pending + chunk).split("\n");
        pending = lines.pop();
        for (const line of lines) {
            if (!line.trim())
                continue;
            let run;
            try {
                run = JSON.parse(line);
            } catch (ex) {
                console.warn("history: not JSON:", line);
                continue;
            }
            // Newest first; a long history keeps its latest runs.
            body.prepend(timelineRow(run));
            while (body.children.length > TIMELINE_ROWS)
                body.lastElementChild.remove();
        }
    });
    current.process.then(() => {
        if (!current.closed)
            state.textContent = _("Ended");
    }, ex => {
        if (current.closed)
            return;
        state.textContent = "";
        showError("timeline-error", errorText(ex));
    });
}

/* -- the dry run: `run EVENT DOMAIN --json` ---------------------------------------------- */

async function dryRun(event) {
    event.preventDefault();
    const name = document.getElementById("dryrun-event").value.trim();
    const domain = document.getElementById("dryrun-vm").value;
    const device = document.getElementById("dryrun-device").value.trim();
    const args = ["run", name, domain, "--json", ...(device ? ["--device", device] : [])];
    const button = document.getElementById("dryrun-run");
    button.disabled = true;
    showError("dryrun-error", "");
    try {
        const result = await runBridge(args);
        if (!result.out.trim()) {
            showError("dryrun-error", result.message || cockpit.format(_("libvirt-bridge run failed ($0)"), result.status));
            document.getElementById("dryrun-result").hidden = true;
            return;
        }
        showTrial(JSON.parse(result.out));
    } catch (ex) {
        showError("dryrun-error", errorText(ex));
    } finally {
        button.disabled = false;
    }
}

function showTrial(trial) {
    document.getElementById("dryrun-result").hidden = false;
    document.getElementById("dryrun-title").textContent = trial.domain
        ? cockpit.format(_("$0 on $1"), trial.event, trial.domain)
        : trial.event;
    const summary = document.getElementById("dryrun-summary");
    const ran = trial.scripts.length;
    if (trial.result === "no script") {
        summary.className = "lb-summary lb-muted";
        summary.textContent = _("No script would run for this event.");
    } else if (trial.result === "ok") {
        summary.className = "lb-summary lb-ok";
        summary.textContent = cockpit.format(cockpit.ngettext("The script succeeded", "All $0 scripts succeeded", ran), ran);
    } else {
        summary.className = "lb-summary lb-error";
        summary.textContent = cockpit.format(_("$0 of $1 failed: $2"), trial.failed.length, ran, trial.failed.join(", "));
    }
    const rows = trial.scripts.map(script => el("tr", {},
                                                el("td", { title: script.script }, el("code", { textContent: script.name })),
                                                el("td", { className: script.outcome === "ok" ? "lb-ok" : "lb-error", textContent: script.status }),
                                                el("td", { textContent: cockpit.format(_("$0 s"), script.duration.toFixed(3)) }),
                                                el("td", {}, el("pre", { className: "lb-stderr", textContent: script.stderr }))));
    for (const path of trial.skipped)
        rows.push(el("tr", {}, el("td", { title: path }, el("code", { textContent: path.split("/").pop() })),
                     el("td", { className: "lb-muted", textContent: _("not run: a script before it exited 2") }),
                     el("td"), el("td")));
    document.querySelector("#dryrun-scripts tbody").replaceChildren(...rows);
    const note = document.getElementById("dryrun-xml-note");
    if (!trial.xml_changed)
        note.textContent = _("The scripts left the XML unchanged.");
    else
        note.textContent = cockpit.format(_("Changed by $0."), trial.changed_by.join(", ")) +
            (trial.xml_note ? " " + trial.xml_note : "");
    const diff = document.getElementById("dryrun-diff");
    diff.hidden = !trial.diff;
    diff.replaceChildren(...trial.diff.split("\n").map(line => {
        const header = line.startsWith("+++") || line.startsWith("---");
        const kind = header ? "" : line.startsWith("+") ? "lb-add" : line.startsWith("-") ? "lb-del" : "";
        return el("span", { className: kind, textContent: line + "\n" });
    }));
}

/* -- start ------------------------------------------------------------------------------- */

async function init() {
    applyTheme();
    window.addEventListener("storage", event => {
        if (event.key === "shell:style")
            applyTheme();
    });
    window.matchMedia("(prefers-color-scheme: dark)").addEventListener("change", applyTheme);
    cockpit.translate();
    document.getElementById("device-add-id").placeholder = _("Device: MAC, vda, alias or disk:vdb");
    document.getElementById("device-add-assignment").placeholder = _("NAME=VALUE");
    document.getElementById("dryrun-device").placeholder = _("only for a device event");

    for (const button of document.querySelectorAll(".lb-tabs button")) {
        button.addEventListener("click", () => {
            const view = button.dataset.view;
            const vm = document.getElementById("vm-select").value;
            cockpit.location.go(view === "vm" && vm ? [view, vm] : [view]);
        });
    }
    document.getElementById("vm-select").addEventListener("change", event => {
        cockpit.location.go(["vm", event.target.value]);
    });
    document.getElementById("status-refresh").addEventListener("click", loadStatus);
    document.getElementById("dryrun-form").addEventListener("submit", dryRun);
    document.getElementById("device-add").addEventListener("submit", event => {
        event.preventDefault();
        const device = document.getElementById("device-add-id").value.trim();
        const assignment = document.getElementById("device-add-assignment").value;
        const domain = document.getElementById("vm-select").value;
        changeProperty(domain, device, ["set", assignment], document.getElementById("device-add-error"));
    });
    cockpit.addEventListener("locationchanged", route);

    await loadManifest();
    route();
    await Promise.all([loadStatus(), loadScripts(), loadDomains()]);
    route();
    document.body.dataset.loaded = "true";
}

document.addEventListener("DOMContentLoaded", init);
