package collectorapi

import (
	"fmt"
	"time"
)

// MinPostgresEngineLeaseTTL is the shortest survey engine lease a collector
// on PostgreSQL accepts (its --postgres-engine-lease-ttl, the manager's
// --collector-postgres-engine-lease-ttl): the holder renews the lease every
// third of it, and a renewal must fit in that.
const MinPostgresEngineLeaseTTL = 3 * time.Second

// CheckPostgresEngineLeaseTTL refuses a survey engine lease shorter than
// MinPostgresEngineLeaseTTL; zero (the collectors' default) passes. The
// caller names its flag.
func CheckPostgresEngineLeaseTTL(ttl time.Duration) error {
	if ttl != 0 && ttl < MinPostgresEngineLeaseTTL {
		return fmt.Errorf("%s is shorter than %s (its holder renews it every third of it, and a renewal must fit in that)", ttl, MinPostgresEngineLeaseTTL)
	}
	return nil
}
