"""Who is calling and how azproxy authenticates to Azure: the credentials a
client presents, the gate that turns them into a caller, the callers (a
pass-through token or an access key routed by the model map), and the
api-key, bearer or Entra ID header azproxy sends upstream."""
