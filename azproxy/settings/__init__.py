"""What the operator configures.

- config: the frozen Config, one declaration per setting (default, help,
  check), and the checks between settings;
- fields: what a declaration is, a setting's names, raw value -> typed value;
- values: the parsers and single-value checks the declarations name;
- load: flag > environment > config file > default, and the config file;
- server_side: endpoints, the model map and access keys; secrets: values
  never shown, `env:NAME` references; patterns: what names may look like;
- table: docs/settings.md, generated from the declarations.
"""
