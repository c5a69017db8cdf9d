"""`autodidact`: the command line. It only parses, builds and runs.

`cli.app.make_app(loaders)` builds the typer app; each command group lives in a module of
its own (`models`, `tasks`, `session`, `probe`, `policy`) and receives the loaders it
needs from the factory, so tests pass stand-ins instead of patching modules."""
