package kafka

import "github.com/sluicehq/sluice/connectors"

// FirstRecords returns u cut to its first n records, as a worker killed
// in the middle of the unit would have written it.
func FirstRecords(u connectors.Unit, n int) connectors.Unit {
	recs, err := unitRecords(u)
	if err != nil {
		panic(err)
	}
	u.Body = &recordsBody{recs: recs[:min(n, len(recs))]}
	return u
}
