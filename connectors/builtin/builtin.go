// Package builtin registers the connectors this build has. It is the one
// list of them: the sluice binary and the in-process test clusters take
// their registry from here, so a new connector kind is
// its package under connectors/ plus one line in Register (its layering
// rule in deps_test.go comes by default).
package builtin

import (
	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/connectors/clickhouse"
	"github.com/sluicehq/sluice/connectors/files"
	"github.com/sluicehq/sluice/connectors/iceberg"
	"github.com/sluicehq/sluice/connectors/kafka"
	"github.com/sluicehq/sluice/connectors/latest"
	"github.com/sluicehq/sluice/connectors/pgcdc"
	"github.com/sluicehq/sluice/connectors/postgres"
)

// Register adds every built-in connector to reg.
func Register(reg *connectors.Registry) {
	files.Register(reg)
	postgres.Register(reg)
	pgcdc.Register(reg, nil) // its snapshot sink publishes through each worker's own connection
	clickhouse.Register(reg)
	iceberg.Register(reg)
	kafka.Register(reg)
	latest.Register(reg)
}

// Registry returns a new registry holding every built-in connector.
func Registry() *connectors.Registry {
	reg := connectors.NewRegistry()
	Register(reg)
	return reg
}
