"""infinity_mlflow_server: one-command MLflow tracking server (loopback, sqlite, proxied local artifacts)."""

from .server import MlflowServer, ServerConfig, build_command, free_port, start_server

__all__ = ["MlflowServer", "ServerConfig", "build_command", "free_port", "start_server"]
