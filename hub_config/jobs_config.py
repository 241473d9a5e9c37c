# The jobs service's settings (traitlets config), read when the service starts.
# A file that cannot be used is reported in the service's log and skipped.
# Every setting, with its help: python -m jhub_ext.service.app --help-all
c = get_config()  # noqa: F821

# Per user: job submissions and restarts a minute, stops and deletes a minute, logs followed at once.
c.JobsService.submits_per_minute = 30
c.JobsService.actions_per_minute = 120
c.JobsService.follows_per_user = 5

# Most runs of one scheduled job alive at once. Above 1, a job with concurrency_policy "allow"
# may ask for up to this many (max_live_runs); each live run counts against its group's quota.
c.JobsService.max_live_runs = 1

# Notifications of jobs' ends, failures, restarts and quiet scrapers (each user chooses theirs in the
# dashboard, with %notify_settings or PUT api/settings). Email needs a mail server; webhooks may only
# point where these prefixes allow (local mode allows http://127.0.0.1:* unless you set them).
# c.JobNotifications.smtp_host = "smtp.example.org"
# c.JobNotifications.smtp_port = 587
# c.JobNotifications.smtp_security = "starttls"
# c.JobNotifications.sender = "jupyterhub-jobs@example.org"
# c.JobNotifications.webhook_prefixes = ["https://hooks.slack.com/services/"]
# c.JobNotifications.public_url = "https://hub.example.org"
