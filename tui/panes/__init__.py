"""The four main panes: catalog, projects, jobs, chat."""
