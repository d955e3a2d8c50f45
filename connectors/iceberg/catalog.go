package iceberg

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/apache/iceberg-go"
	"github.com/apache/iceberg-go/catalog"
	"github.com/apache/iceberg-go/catalog/rest"
	sqlcat "github.com/apache/iceberg-go/catalog/sql"
	_ "github.com/apache/iceberg-go/io/gocloud/s3" // the s3:// FileIO
	"github.com/apache/iceberg-go/table"
	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" database/sql driver
	_ "modernc.org/sqlite"             // the "sqlite" database/sql driver
)

// lake is an open catalog and the identifier of the configured table.
type lake struct {
	cfg   Config
	cat   catalog.Catalog
	db    *sql.DB // a SQL catalog's database, closed by close
	ns    table.Identifier
	ident table.Identifier
}

// openLake opens the configured catalog. A SQL catalog creates its tables
// when they are missing; a SQLite file is created with its directory.
func openLake(ctx context.Context, cfg Config) (*lake, error) {
	kind, addr, err := cfg.catalog()
	if err != nil {
		return nil, err
	}
	wh, err := cfg.warehouse()
	if err != nil {
		return nil, err
	}
	ns, name := cfg.splitTable()
	l := &lake{cfg: cfg, ns: ns, ident: append(append(table.Identifier{}, ns...), name)}
	props := iceberg.Properties{"warehouse": wh}
	for k, v := range cfg.s3Props() {
		props[k] = v
	}
	switch kind {
	case catalogREST:
		opts := []rest.Option{rest.WithWarehouseLocation(wh), rest.WithAdditionalProps(props)}
		if cfg.CatalogToken != "" {
			opts = append(opts, rest.WithOAuthToken(cfg.CatalogToken))
		}
		c, err := rest.NewCatalog(ctx, "rest", addr, opts...)
		if err != nil {
			return nil, fmt.Errorf("open REST catalog %s: %w", redact(addr), err)
		}
		l.cat = c
		return l, nil
	case catalogSQLite:
		if err := os.MkdirAll(filepath.Dir(addr), 0o755); err != nil {
			return nil, fmt.Errorf("open SQLite catalog: %w", err)
		}
		// WAL and a busy timeout let the coordinator and the workers of
		// one process (sluice dev) use the file at once.
		l.db, err = sql.Open("sqlite", "file:"+addr+"?_pragma=busy_timeout(30000)&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)")
	case catalogPostgres:
		l.db, err = sql.Open("pgx", addr)
	}
	if err != nil {
		return nil, fmt.Errorf("open %s catalog: %w", kind, err)
	}
	dialect := sqlcat.SQLite
	if kind == catalogPostgres {
		dialect = sqlcat.Postgres
	}
	name = cfg.CatalogName
	if name == "" {
		name = DefaultCatalogName
	}
	c, err := newSQLCatalog(ctx, name, l.db, dialect, props)
	if err != nil {
		l.db.Close()
		where := addr
		if kind == catalogPostgres {
			where = redact(addr)
		}
		return nil, fmt.Errorf("open %s catalog %s: %w", kind, where, err)
	}
	l.cat = c
	return l, nil
}

// newSQLCatalog opens a SQL catalog, creating its tables when missing.
// NewCatalog takes no context: it is bounded here by ctx's deadline
// through the database's own connection attempts only.
func newSQLCatalog(ctx context.Context, name string, db *sql.DB, dialect sqlcat.SupportedDialect, props iceberg.Properties) (*sqlcat.Catalog, error) {
	if err := db.PingContext(ctx); err != nil {
		return nil, err
	}
	return sqlcat.NewCatalog(name, db, dialect, props)
}

// lazyLake opens the catalog of a configuration once, when first needed;
// the sink and the source hold one.
type lazyLake struct {
	cfg Config
	mu  sync.Mutex
	lk  *lake
}

func (z *lazyLake) get(ctx context.Context) (*lake, error) {
	z.mu.Lock()
	defer z.mu.Unlock()
	if z.lk != nil {
		return z.lk, nil
	}
	l, err := openLake(ctx, z.cfg)
	if err != nil {
		return nil, err
	}
	z.lk = l
	return l, nil
}

// load opens the catalog if need be and loads the table: nil without an
// error when it does not exist.
func (z *lazyLake) load(ctx context.Context) (*lake, *table.Table, error) {
	l, err := z.get(ctx)
	if err != nil {
		return nil, nil, err
	}
	tbl, err := l.load(ctx)
	return l, tbl, err
}

// Close releases the catalog, if it was opened.
func (z *lazyLake) Close() error {
	z.mu.Lock()
	defer z.mu.Unlock()
	if z.lk == nil {
		return nil
	}
	err := z.lk.close()
	z.lk = nil
	return err
}

// close releases the catalog's database connections.
func (l *lake) close() error {
	if l.db != nil {
		return l.db.Close()
	}
	return nil
}

// name is the table's name for messages.
func (l *lake) name() string { return l.cfg.Table }

// load loads the table; nil without an error when it does not exist.
func (l *lake) load(ctx context.Context) (*table.Table, error) {
	t, err := l.cat.LoadTable(ctx, l.ident)
	if errors.Is(err, catalog.ErrNoSuchTable) || errors.Is(err, catalog.ErrNoSuchNamespace) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("load table %s: %w", l.name(), err)
	}
	return t, nil
}

// create creates the table with schema sc, its namespace too when
// missing. A table created meanwhile by someone else is loaded instead.
func (l *lake) create(ctx context.Context, sc *iceberg.Schema) (*table.Table, error) {
	if ok, err := l.cat.CheckNamespaceExists(ctx, l.ns); err != nil {
		return nil, fmt.Errorf("check namespace of %s: %w", l.name(), err)
	} else if !ok {
		if err := l.cat.CreateNamespace(ctx, l.ns, nil); err != nil && !errors.Is(err, catalog.ErrNamespaceAlreadyExists) {
			return nil, fmt.Errorf("create namespace of %s: %w", l.name(), err)
		}
	}
	t, err := l.cat.CreateTable(ctx, l.ident, sc, catalog.WithProperties(iceberg.Properties{
		table.PropertyFormatVersion:               "2",
		table.ParquetCompressionKey:               "zstd",
		table.WriteFormatDefaultKey:               "parquet",
		table.MetadataDeleteAfterCommitEnabledKey: "true",
	}))
	if errors.Is(err, catalog.ErrTableAlreadyExists) {
		return l.cat.LoadTable(ctx, l.ident)
	}
	if err != nil {
		return nil, fmt.Errorf("create table %s: %w", l.name(), err)
	}
	return t, nil
}
