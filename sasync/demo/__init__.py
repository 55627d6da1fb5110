"""
The sAsync demo: an access-log-to-database application on L{AccessBroker}.

Run it as C{python -m sasync demo} (ingest a generated or given log, then
print a report) or C{python -m sasync serve} (a twisted.web API on the same
database). The pieces:

  - L{sasync.demo.logbroker}: the broker, tables and transactions;
  - L{sasync.demo.loggen}: a deterministic generator of realistic logs;
  - L{sasync.demo.logparse}: the combined-format parser;
  - L{sasync.demo.ingest}: log lines into the database, in batches;
  - L{sasync.demo.report}: the report, read back through the broker;
  - L{sasync.demo.progress}: the progress bar;
  - L{sasync.demo.server}: the twisted.web resources;
  - L{sasync.demo.cli}: the command line.
"""
