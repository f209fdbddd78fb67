package controllers

import (
	"errors"
	"strings"
	"testing"

	cxv1 "github.com/cxop-dev/cxop/api/v1alpha1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/event"
)

func namespaceWith(annotations map[string]string) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Annotations: annotations}}
}

// TestDataPolicyForNamespace: annotations override the defaults one by
// one, and every unusable one is named with its value and why, never
// replaced by the default.
func TestDataPolicyForNamespace(t *testing.T) {
	defaults := DataPolicy{Retention: "400d", ContactRetention: "7d"}
	for _, tc := range []struct {
		name        string
		annotations map[string]string
		want        DataPolicy
		wantErr     string
	}{
		{name: "no annotations", want: defaults},
		{name: "all set", annotations: map[string]string{
			RetentionAnnotation: "90d", ContactRetentionAnnotation: "36h", PseudonymizeCustomersAnnotation: "true",
		}, want: DataPolicy{Retention: "90d", ContactRetention: "36h", PseudonymizeCustomers: true}},
		{name: "pseudonymization off explicitly", annotations: map[string]string{PseudonymizeCustomersAnnotation: "false"}, want: defaults},
		{name: "retention not a duration", annotations: map[string]string{RetentionAnnotation: "a year"},
			wantErr: `namespace shop: annotation cx.cxop.dev/retention: "a year" is not a positive duration such as 400d, 72h or 30m; the collector keeps its last config until this is fixed`},
		{name: "zero contact retention", annotations: map[string]string{ContactRetentionAnnotation: "0s"},
			wantErr: `namespace shop: annotation cx.cxop.dev/contact-retention: "0s" is not a positive duration such as 400d, 72h or 30m; the collector keeps its last config until this is fixed`},
		{name: "pseudonymize not a bool, and an empty retention", annotations: map[string]string{PseudonymizeCustomersAnnotation: "yes", RetentionAnnotation: ""},
			wantErr: `namespace shop: annotation cx.cxop.dev/retention: "" is not a positive duration such as 400d, 72h or 30m; annotation cx.cxop.dev/pseudonymize-customers: "yes" is neither "true" nor "false"; the collector keeps its last config until this is fixed`},
		{name: "contact retention longer than retention", annotations: map[string]string{RetentionAnnotation: "3d"},
			wantErr: `namespace shop: contact retention 7d (--collector-contact-retention) is longer than the retention 3d (annotation cx.cxop.dev/retention): set annotation cx.cxop.dev/contact-retention to 3d or less; the collector keeps its last config until this is fixed`},
		{name: "a namespace on PostgreSQL", annotations: map[string]string{StoreAnnotation: "postgres", PostgresSecretAnnotation: "shop-db"},
			want: DataPolicy{Retention: "400d", ContactRetention: "7d", Store: StorePostgres, PostgresSecret: "shop-db"}},
		{name: "embedded explicitly", annotations: map[string]string{StoreAnnotation: "embedded"},
			want: DataPolicy{Retention: "400d", ContactRetention: "7d", Store: StoreEmbedded}},
		{name: "unknown store", annotations: map[string]string{StoreAnnotation: "Postgres"},
			wantErr: `namespace shop: annotation cx.cxop.dev/store: "Postgres" is neither "embedded" nor "postgres"; the collector keeps its last config until this is fixed`},
		{name: "PostgreSQL with no Secret named", annotations: map[string]string{StoreAnnotation: "postgres"},
			wantErr: `namespace shop: the namespace keeps its records in PostgreSQL and no Secret holds the connection string: set annotation cx.cxop.dev/postgres-secret, or the manager's --collector-postgres-secret (chart value collector.postgres.secretName); the collector keeps its last config until this is fixed`},
		{name: "not a Secret name", annotations: map[string]string{StoreAnnotation: "postgres", PostgresSecretAnnotation: "../db"},
			wantErr: `namespace shop: annotation cx.cxop.dev/postgres-secret: "../db" is not a Secret name: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*'); the collector keeps its last config until this is fixed`},
		{name: "TRUE is not true", annotations: map[string]string{PseudonymizeCustomersAnnotation: "TRUE"},
			wantErr: `namespace shop: annotation cx.cxop.dev/pseudonymize-customers: "TRUE" is neither "true" nor "false"; the collector keeps its last config until this is fixed`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := dataPolicyFor(namespaceWith(tc.annotations), defaults)
			if tc.wantErr != "" {
				var bad *invalidDataPolicy
				if !errors.As(err, &bad) || err.Error() != tc.wantErr {
					t.Fatalf("error %v; want %s", err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("policy %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

// TestDataPolicyCheckNamesTheFlag: the manager refuses unusable defaults
// at start, naming the flag.
func TestDataPolicyCheckNamesTheFlag(t *testing.T) {
	if err := DefaultDataPolicy.Check(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	for p, want := range map[DataPolicy]string{
		{Retention: "-1d", ContactRetention: "7d"}:                     `--collector-retention: "-1d" is not a positive duration such as 400d, 72h or 30m`,
		{Retention: "400d", ContactRetention: "7"}:                     `--collector-contact-retention: "7" is not a positive duration such as 400d, 72h or 30m`,
		{Retention: "3d", ContactRetention: "7d"}:                      `--collector-contact-retention: 7d is longer than --collector-retention 3d`,
		{Retention: "400d", ContactRetention: "7d", Store: "pg"}:       `--collector-store: "pg" is neither "embedded" nor "postgres"`,
		{Retention: "400d", ContactRetention: "7d", Store: "postgres"}: "--collector-postgres-secret: must name the Secret with the connection string when --collector-store=postgres",
	} {
		if err := p.Check(); err == nil || err.Error() != want {
			t.Errorf("%+v: %v; want %s", p, err, want)
		}
	}
	if got := (DataPolicy{}).withDefaults(); got != DefaultDataPolicy {
		t.Errorf("zero policy with defaults: %+v", got)
	}
}

// TestDataPolicyChangedPassesAnnotationChangesOnly: a Namespace's
// creation and unrelated label or annotation changes do not render its
// collector; adding, changing or removing a policy annotation does.
func TestDataPolicyChangedPassesAnnotationChangesOnly(t *testing.T) {
	ns := func(a map[string]string) *corev1.Namespace { return namespaceWith(a) }
	if dataPolicyChanged.Create(event.CreateEvent{Object: ns(map[string]string{RetentionAnnotation: "9d"})}) {
		t.Error("creation passes")
	}
	for name, tc := range map[string]struct {
		was, now map[string]string
		want     bool
	}{
		"unrelated annotation": {was: nil, now: map[string]string{"team": "cx"}, want: false},
		"added":                {was: nil, now: map[string]string{RetentionAnnotation: "9d"}, want: true},
		"changed":              {was: map[string]string{ContactRetentionAnnotation: "7d"}, now: map[string]string{ContactRetentionAnnotation: "3d"}, want: true},
		"removed":              {was: map[string]string{PseudonymizeCustomersAnnotation: "true"}, now: nil, want: true},
		"set to empty":         {was: nil, now: map[string]string{RetentionAnnotation: ""}, want: true},
		"store changed":        {was: map[string]string{StoreAnnotation: "embedded"}, now: map[string]string{StoreAnnotation: "postgres"}, want: true},
		"secret named":         {was: nil, now: map[string]string{PostgresSecretAnnotation: "shop-db"}, want: true},
	} {
		if got := dataPolicyChanged.Update(event.UpdateEvent{ObjectOld: ns(tc.was), ObjectNew: ns(tc.now)}); got != tc.want {
			t.Errorf("%s: passes %v; want %v", name, got, tc.want)
		}
	}
}

// TestDataPolicyFitsSurveys: a Survey cannot remember longer than the
// namespace keeps data. The collector refuses such a config, so the
// manager names every conflict instead of rendering it.
func TestDataPolicyFitsSurveys(t *testing.T) {
	svy := func(name, throttle, linkTTL string) cxv1.Survey {
		s := cxv1.Survey{ObjectMeta: metav1.ObjectMeta{Name: name}}
		if throttle != "" {
			s.Spec.Throttle = &cxv1.SurveyThrottle{PerCustomer: cxv1.Duration(throttle)}
		}
		if linkTTL != "" {
			s.Spec.LinkTTL = cxv1.Duration(linkTTL)
		}
		return s
	}
	surveys := []cxv1.Survey{svy("fits", "30d", ""), svy("quarterly", "90d", ""), svy("long-links", "", "60d")}
	if err := (DataPolicy{Retention: "90d", ContactRetention: "7d"}).fits("shop", surveys); err != nil {
		t.Fatalf("90d retention: %v", err)
	}
	err := (DataPolicy{Retention: "30d", ContactRetention: "7d"}).fits("shop", surveys)
	want := `namespace shop: Survey quarterly: spec.throttle.perCustomer 90d is longer than the namespace's retention 30d, which keeps the contact history it needs; Survey long-links: spec.linkTTL 60d is longer than the namespace's retention 30d, which keeps the invitations its links answer; the collector keeps its last config until this is fixed`
	var bad *invalidDataPolicy
	if !errors.As(err, &bad) || err.Error() != want {
		t.Fatalf("error %v\nwant %s", err, want)
	}
	// The default link lifetime (7d) counts too.
	if err := (DataPolicy{Retention: "3d", ContactRetention: "1d"}).fits("shop", []cxv1.Survey{svy("default-links", "", "")}); err == nil || !strings.Contains(err.Error(), "spec.linkTTL 7d") {
		t.Fatalf("3d retention with the default link lifetime: %v", err)
	}
}
