package chart

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// renderRBAC renders the chart's RBAC template as hack/rbac-golden.sh does.
func renderRBAC(t *testing.T, values ...string) []byte {
	t.Helper()
	helm := os.Getenv("HELM")
	if helm == "" {
		t.Fatal(`HELM must be set: run "make test"`)
	}
	args := append([]string{"template", "cxop", filepath.Join("..", "..", "charts", "cxop"),
		"--namespace", "cxop-system", "--show-only", "templates/rbac.yaml"}, values...)
	out, err := exec.Command(helm, args...).Output()
	if err != nil {
		t.Fatalf("helm %s: %v", strings.Join(args, " "), err)
	}
	return out
}

// TestRBACMatchesTheGoldenFiles keeps the checked-in render of the
// manager's permissions equal to what the chart installs, so that every
// widening of them is a reviewed diff of test/chart/testdata.
func TestRBACMatchesTheGoldenFiles(t *testing.T) {
	for golden, values := range map[string][]string{
		"rbac-cluster-wide.golden.yaml": nil,
		"rbac-namespaced.golden.yaml":   {"--set", "watchNamespaces={shop,support}"},
	} {
		want, err := os.ReadFile(filepath.Join("testdata", golden))
		if err != nil {
			t.Fatal(err)
		}
		if got := renderRBAC(t, values...); !bytes.Equal(got, want) {
			t.Errorf("the chart's RBAC differs from testdata/%s: run `make rbac-golden` and review the diff", golden)
		}
	}
}

// rbacObjects decodes a render into its Roles, RoleBindings, ClusterRoles
// and ClusterRoleBindings, by namespace/name.
type rbacObjects struct {
	roles, clusterRoles    map[string]rbacv1.Role
	bindings, clusterBinds map[string]rbacv1.RoleBinding
}

func decodeRBAC(t *testing.T, out []byte) rbacObjects {
	t.Helper()
	o := rbacObjects{roles: map[string]rbacv1.Role{}, clusterRoles: map[string]rbacv1.Role{},
		bindings: map[string]rbacv1.RoleBinding{}, clusterBinds: map[string]rbacv1.RoleBinding{}}
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(out), 4096)
	for {
		var raw map[string]any
		if err := dec.Decode(&raw); err != nil {
			break
		}
		if len(raw) == 0 {
			continue
		}
		data, _ := yaml.Marshal(raw)
		switch raw["kind"] {
		case "Role", "ClusterRole":
			var r rbacv1.Role
			if err := yaml.UnmarshalStrict(data, &r); err != nil {
				t.Fatal(err)
			}
			if raw["kind"] == "Role" {
				o.roles[r.Namespace+"/"+r.Name] = r
			} else {
				o.clusterRoles[r.Name] = r
			}
		case "RoleBinding", "ClusterRoleBinding":
			var b rbacv1.RoleBinding
			if err := yaml.UnmarshalStrict(data, &b); err != nil {
				t.Fatal(err)
			}
			if raw["kind"] == "RoleBinding" {
				o.bindings[b.Namespace+"/"+b.Name] = b
			} else {
				o.clusterBinds[b.Name] = b
			}
		}
	}
	return o
}

// managerRules are the rules generated from the reconcilers' markers.
func managerRules(t *testing.T) []rbacv1.PolicyRule {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "..", "charts", "cxop", "files", "manager-rules.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var rules []rbacv1.PolicyRule
	if err := yaml.UnmarshalStrict(data, &rules); err != nil {
		t.Fatal(err)
	}
	if len(rules) == 0 {
		t.Fatal("files/manager-rules.yaml holds no rules")
	}
	return rules
}

// namespacedRules splits the manager's rules as the namespaced mode does:
// the rule for Namespace objects (cluster-scoped, which a Role cannot grant
// list or watch of), and the rest.
func namespacedRules(t *testing.T, rules []rbacv1.PolicyRule) (namespaces rbacv1.PolicyRule, rest []rbacv1.PolicyRule) {
	t.Helper()
	found := false
	for _, r := range rules {
		if reflect.DeepEqual(r.APIGroups, []string{""}) && reflect.DeepEqual(r.Resources, []string{"namespaces"}) {
			namespaces, found = r, true
			continue
		}
		rest = append(rest, r)
	}
	if !found {
		t.Fatal("files/manager-rules.yaml has no rule of its own for namespaces")
	}
	return namespaces, rest
}

// TestNamespacedModeGrantsRolesOnly renders the namespaced mode: the
// manager's rules become a Role bound to its ServiceAccount in each watched
// namespace, and nothing binds the ServiceAccount cluster-wide but the
// watched Namespace objects themselves, by name.
func TestNamespacedModeGrantsRolesOnly(t *testing.T) {
	o := decodeRBAC(t, renderRBAC(t, "--set", "watchNamespaces={shop,support}"))
	nsRule, rules := namespacedRules(t, managerRules(t))
	for _, ns := range []string{"shop", "support"} {
		role, ok := o.roles[ns+"/cxop-manager"]
		if !ok {
			t.Fatalf("no Role cxop-manager in %s; rendered %v", ns, keys(o.roles))
		}
		if !reflect.DeepEqual(role.Rules, rules) {
			t.Errorf("Role %s/cxop-manager rules %v; want files/manager-rules.yaml %v", ns, role.Rules, rules)
		}
		b, ok := o.bindings[ns+"/cxop-manager"]
		if !ok || b.RoleRef.Kind != "Role" || b.RoleRef.Name != "cxop-manager" || len(b.Subjects) != 1 ||
			b.Subjects[0].Kind != "ServiceAccount" || b.Subjects[0].Name != "cxop" || b.Subjects[0].Namespace != "cxop-system" {
			t.Errorf("RoleBinding %s/cxop-manager: %+v; want Role cxop-manager bound to ServiceAccount cxop-system/cxop", ns, b)
		}
	}
	// The one cluster-wide grant: get, list and watch of the watched
	// Namespace objects, by name (a list or watch must select one by
	// metadata.name), for their data policy annotations.
	wantNS := rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"namespaces"},
		ResourceNames: []string{"shop", "support"}, Verbs: nsRule.Verbs}
	if !reflect.DeepEqual(nsRule.Verbs, []string{"get", "list", "watch"}) {
		t.Errorf("namespaces rule verbs %v; want get, list, watch", nsRule.Verbs)
	}
	if cr, ok := o.clusterRoles["cxop-manager-namespaces"]; !ok || !reflect.DeepEqual(cr.Rules, []rbacv1.PolicyRule{wantNS}) {
		t.Errorf("ClusterRole cxop-manager-namespaces %+v; want only %+v", cr, wantNS)
	}
	if len(o.clusterBinds) != 1 {
		t.Errorf("namespaced mode binds cluster-wide: %v; want cxop-manager-namespaces only", keys(o.clusterBinds))
	}
	if b, ok := o.clusterBinds["cxop-manager-namespaces"]; !ok || b.RoleRef.Kind != "ClusterRole" || b.RoleRef.Name != "cxop-manager-namespaces" ||
		len(b.Subjects) != 1 || b.Subjects[0].Name != "cxop" || b.Subjects[0].Namespace != "cxop-system" {
		t.Errorf("ClusterRoleBinding cxop-manager-namespaces: %+v", b)
	}
	if _, ok := o.clusterRoles["cxop-manager"]; ok {
		t.Error("namespaced mode renders the manager's ClusterRole")
	}
	// Besides the watched namespaces, the manager holds only its leader
	// election Role in its own namespace.
	if len(o.roles) != 3 {
		t.Errorf("Roles %v; want one in shop, one in support and the leader election's", keys(o.roles))
	}

	cw := decodeRBAC(t, renderRBAC(t))
	if cr, ok := cw.clusterRoles["cxop-manager"]; !ok || !reflect.DeepEqual(cr.Rules, managerRules(t)) {
		t.Errorf("cluster-wide mode: ClusterRole cxop-manager %+v; want the rules of files/manager-rules.yaml", cr)
	}
	if b, ok := cw.clusterBinds["cxop-manager"]; !ok || b.RoleRef.Name != "cxop-manager" {
		t.Errorf("cluster-wide mode: ClusterRoleBinding cxop-manager %+v", b)
	}
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
