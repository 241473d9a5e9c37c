"""The jobs service: researchers' scrapers, batch jobs and scheduled jobs."""
