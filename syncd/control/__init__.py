"""How people and systemd see and steer the daemon: status socket, sd_notify, logging."""
