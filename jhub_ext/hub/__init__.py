"""What runs inside JupyterHub's own process: how jhub_ext's configuration joins the one it is loaded into."""
