package promrules

import (
	"fmt"
)

// Alert names of a namespace's collector.
const (
	// DataVolumeFillingAlert warns days ahead that the data volume will
	// be full, and pages when it nearly is.
	DataVolumeFillingAlert = "CXOPCollectorDataVolumeFilling"
	// StoreNotWritableAlert fires while the store refuses records (a full
	// volume, or a failed write awaiting the restart).
	StoreNotWritableAlert = "CXOPCollectorStoreNotWritable"
	// RetentionDoesNotFitAlert fires while the records of one retention,
	// at the recent rate, need more than the data volume holds.
	RetentionDoesNotFitAlert = "CXOPCollectorRetentionDoesNotFit"
)

// Collector returns the rules on one namespace's collector: its data
// volume filling up, its store refusing records, and its retention not
// fitting the volume. The collector opens
// its store read-only below 128 MiB free, so the page fires before that.
func Collector(namespace string) (Groups, error) {
	if !nameRE.MatchString(namespace) {
		return Groups{}, fmt.Errorf("namespace: %q is not a DNS label", namespace)
	}
	sel := fmt.Sprintf(`namespace="%s"`, namespace)
	free := fmt.Sprintf(`cxop_collector_data_volume_free_bytes{%s}`, sel)
	size := fmt.Sprintf(`cxop_collector_data_volume_size_bytes{%s}`, sel)
	labels := func(severity string) map[string]string {
		return map[string]string{"severity": severity, "namespace": namespace}
	}
	how := fmt.Sprintf("kubectl -n %s get pvc data-cxop-collector-0 shows the volume; grow it (if its StorageClass allows expansion) or shorten the retention in the collector config.", namespace)
	return Groups{Groups: []Group{{
		Name: fmt.Sprintf("cxop-%s-collector", namespace),
		Rules: []Rule{
			{
				// At the rate of the last 6 hours the volume is full
				// within 4 days: time to grow it during working hours.
				Alert:  DataVolumeFillingAlert,
				Expr:   fmt.Sprintf(`%s / %s < 0.4 and predict_linear(%s[6h], 4 * 24 * 3600) < 0`, free, size, free),
				For:    "1h",
				Labels: labels("ticket"),
				Annotations: map[string]string{
					"summary":     fmt.Sprintf("The cxop collector's data volume in %s fills up within 4 days", namespace),
					"description": "At the rate of the last 6 hours the collector's data volume runs out of space within 4 days; then it stops accepting records (503) until space is freed. " + how,
				},
			},
			{
				// Less than a tenth left, or less than 256 MiB (twice what
				// the store keeps free): page before ingest stops.
				Alert:  DataVolumeFillingAlert,
				Expr:   fmt.Sprintf(`%s / %s < 0.1 or %s < 256 * 1024 * 1024`, free, size, free),
				For:    "5m",
				Labels: labels("page"),
				Annotations: map[string]string{
					"summary":     fmt.Sprintf("The cxop collector's data volume in %s is almost full", namespace),
					"description": "Less than 10% or 256 MiB of the collector's data volume is free; below 128 MiB the collector stops accepting records (503) until space is freed. " + how,
				},
			},
			{
				Alert:  StoreNotWritableAlert,
				Expr:   fmt.Sprintf(`cxop_collector_store_writable{%s} == 0`, sel),
				For:    "5m",
				Labels: labels("page"),
				Annotations: map[string]string{
					"summary":     fmt.Sprintf("The cxop collector in %s refuses records", namespace),
					"description": fmt.Sprintf("The collector's store has not accepted records for 5 minutes; its data volume is full, or a write failed and the pod restarts. Clients get 503 with Retry-After and resend. kubectl -n %s logs cxop-collector-0 and its /readyz say why.", namespace),
				},
			},
			{
				// The collector estimates hourly, when it prunes; two
				// estimates in a row say so before anyone is asked to act.
				Alert:  RetentionDoesNotFitAlert,
				Expr:   fmt.Sprintf(`cxop_collector_retention_fits{%s} == 0`, sel),
				For:    "1h",
				Labels: labels("ticket"),
				Annotations: map[string]string{
					"summary":     fmt.Sprintf("The cxop collector's retention in %s does not fit its data volume", namespace),
					"description": fmt.Sprintf("At the rate of records of the last 7 days and the bytes per record the store measures, one retention of records needs more than the data volume holds (cxop_collector_retention_projected_bytes against cxop_collector_retention_capacity_bytes); the volume would fill before the oldest records are pruned. Grow the volume, or shorten the retention (namespace annotation cx.cxop.dev/retention). kubectl -n %s logs cxop-collector-0 gives the figures.", namespace),
				},
			},
		},
	}}}, nil
}
