"""Views of a session: readers of what the run wrote (its event log and the files of its
`SessionLayout`), never part of the run. `report_data` gathers what `report.html` shows,
`report_charts` and `report_html` draw it, `mlflow_logging` writes the session to its MLflow
run as the events arrive. The layer above the graph (the CLI) wires them in; `graph`
never imports them."""
