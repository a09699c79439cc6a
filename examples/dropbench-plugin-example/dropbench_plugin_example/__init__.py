"""An example dropbench plugin: a task, a model kind and two regularizers (registered in pyproject.toml)."""
