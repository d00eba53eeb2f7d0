"""`factory report`: the loop in pictures, a static HTML page with PNG plots read from the warehouse.

The package imports nothing itself: the CLI registers `report.cli` at every start, and the plotting libraries (about
0.3 s of matplotlib and pandas) load only when a report is written (`report.write`)."""
