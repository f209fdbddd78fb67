package collectorapi

import "time"

// MinPostgresEngineLeaseTTL is the shortest survey engine lease a collector
// on PostgreSQL accepts (its --postgres-engine-lease-ttl, the manager's
// --collector-postgres-engine-lease-ttl): the holder renews the lease every
// third of it, and a renewal must fit in that.
const MinPostgresEngineLeaseTTL = 3 * time.Second
