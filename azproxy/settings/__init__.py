"""What the operator configures: one declaration per setting, the frozen
Config and its checks, loading from flag > environment > file > default, the
server-side endpoints, model map and access keys, and secrets."""
