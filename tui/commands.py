"""Every user action of the app, by id: what the command palette lists and the help screen explains.

A command runs an action string on the app (Textual's action syntax), so a key binding with the
same id and the palette entry always do the same thing. Other parts of aitk (the Azure commands
when they arrive) add theirs with `register()` before the app starts:

    from aitk.tui.commands import Command, register
    register(Command("azure.login", "Azure: sign in", "Sign in with a device code", "azure_login"))

and define the action (`action_azure_login`) on a class mixed into the app, or use an action string
that calls an existing one.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Command:
    id: str  # also the id of the key binding doing the same, when there is one
    title: str
    help: str
    action: str  # run with App.run_action, e.g. "pane_do('jobs', 'cancel')"


def _pane(pane: str, action: str) -> str:
    return f"pane_do('{pane}', '{action}')"


COMMANDS: list[Command] = [
    Command("pane.catalog", "Go to Catalog", "Models you can fine-tune: search, details, download", "show_pane('catalog')"),
    Command("pane.projects", "Go to Projects", "Your fine-tuning projects", "show_pane('projects')"),
    Command("pane.jobs", "Go to Jobs", "Fine-tune and export jobs: progress, loss, logs", "show_pane('jobs')"),
    Command("pane.chat", "Go to Chat", "Chat with a base, tuned or remote model", "show_pane('chat')"),
    Command("app.new_project", "New project…", "Create a fine-tuning project step by step", "new_project"),
    Command("app.help", "Help: keys", "Every key and what it does", "help"),
    Command("app.config", "Show config file", "Where the settings file is, and its problems", "show_config"),
    Command("projects.finetune", "Projects: fine-tune selected", "Start fine-tuning (then export for chat)",
            _pane("projects", "finetune")),
    Command("projects.export", "Projects: export selected", "Export the model + adapter to ONNX for chat",
            _pane("projects", "export")),
    Command("projects.chat", "Projects: chat with selected", "Open the chat pane on this project's model",
            _pane("projects", "chat")),
    Command("projects.refresh", "Projects: refresh", "Rescan the projects folder", _pane("projects", "refresh")),
    Command("jobs.cancel", "Jobs: cancel selected", "Stop the job; its log and outputs are kept",
            _pane("jobs", "cancel")),
    Command("jobs.retry", "Jobs: retry selected", "Run the same job again from the start", _pane("jobs", "retry")),
    Command("jobs.resume", "Jobs: resume selected", "Continue a stopped fine-tune from its last checkpoint",
            _pane("jobs", "resume")),
    Command("jobs.delete", "Jobs: delete selected", "Remove a finished job and its folder", _pane("jobs", "delete")),
    Command("jobs.open_project", "Jobs: open project", "Show the selected job's project", _pane("jobs", "open_project")),
    Command("jobs.chat", "Jobs: chat with result", "Chat with the model this job produced (exports first if needed)",
            _pane("jobs", "chat")),
    Command("chat.stop", "Chat: stop generation", "Stop the answer being written", _pane("chat", "stop")),
    Command("chat.clear", "Chat: new conversation", "Forget the history and start over", _pane("chat", "clear")),
    Command("chat.save", "Chat: save transcript", "Write the conversation to a Markdown file", _pane("chat", "save")),
    Command("chat.options", "Chat: parameters", "Show/hide max tokens, temperature, top-p, top-k, system prompt",
            _pane("chat", "options")),
    Command("chat.mode", "Chat: next mode", "Tuned → base → side by side → remote endpoint", _pane("chat", "mode")),
    Command("catalog.search", "Catalog: search", "Filter models by name", _pane("catalog", "search")),
    Command("catalog.download", "Catalog: download selected", "Download the selected model variant",
            _pane("catalog", "download")),
    Command("catalog.cancel", "Catalog: cancel download", "Stop the running download", _pane("catalog", "cancel")),
    Command("catalog.fits", "Catalog: toggle fits-this-machine", "Show only models this machine can fine-tune",
            _pane("catalog", "toggle_fits")),
    Command("catalog.new_project", "Catalog: new project with selected", "Start the wizard on this model",
            _pane("catalog", "new_project")),
    Command("azure.status", "Azure: status", "Whether aitk sees an Azure sign-in (az login or AZURE_* variables)",
            "azure_status"),
]


def register(command: Command) -> None:
    """Add (or replace, by id) a palette command."""
    for i, existing in enumerate(COMMANDS):
        if existing.id == command.id:
            COMMANDS[i] = command
            return
    COMMANDS.append(command)
