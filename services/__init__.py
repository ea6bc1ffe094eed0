"""ltrr services: gRPC servers, clients, the CLI and process launchers; thin adapters over core/."""
