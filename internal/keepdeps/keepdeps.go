// Package keepdeps pins dependencies in go.mod while the packages that use
// them are being written. It is removed once they are.
package keepdeps

import (
	_ "github.com/apache/arrow-go/v18/arrow/csv"
	_ "github.com/apache/arrow-go/v18/parquet/pqarrow"
	_ "github.com/hashicorp/raft"
	_ "github.com/hashicorp/raft-boltdb/v2"
	_ "github.com/nats-io/nats-server/v2/server"
	_ "github.com/nats-io/nats.go/jetstream"
	_ "go.uber.org/goleak"
	_ "golang.org/x/sync/errgroup"
)
