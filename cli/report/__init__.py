"""Charts and the monthly HTML report, drawn from the accounting API's JSON."""
