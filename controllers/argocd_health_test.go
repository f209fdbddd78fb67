package controllers

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	lua "github.com/yuin/gopher-lua"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	kstatus "sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/yaml"
)

// The Argo CD health check of config/argocd/health.lua, run as Argo CD
// runs it: with gopher-lua, the interpreter Argo CD embeds, the object in
// the global "obj" and the result the table the script returns.

var healthScriptPath = filepath.Join("..", "config", "argocd", "health.lua")

func healthScript(t interface{ Fatal(...any) }) string {
	data, err := os.ReadFile(healthScriptPath)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// argoHealth runs script over obj (an object as unstructured JSON) and
// returns the status and message it gives.
func argoHealth(script string, obj map[string]any) (status, message string, err error) {
	L := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer L.Close()
	// The libraries Argo CD opens for a health check from argocd-cm
	// (util/lua's runLua): package, base and table, and a reduced os that
	// the script does not use. No string or math library: a script calling
	// string.format would fail in Argo CD, and so fails here.
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{
		{lua.LoadLibName, lua.OpenPackage}, {lua.BaseLibName, lua.OpenBase}, {lua.TabLibName, lua.OpenTable},
	} {
		L.Push(L.NewFunction(lib.open))
		L.Push(lua.LString(lib.name))
		L.Call(1, 0)
	}
	L.SetGlobal("obj", luaValue(L, obj))
	if err := L.DoString(script); err != nil {
		return "", "", err
	}
	ret, ok := L.Get(-1).(*lua.LTable)
	if !ok {
		return "", "", fmt.Errorf("the script returned %s, not a table", L.Get(-1).Type())
	}
	st, _ := ret.RawGetString("status").(lua.LString)
	msg, _ := ret.RawGetString("message").(lua.LString)
	switch st {
	case "Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown":
	default:
		// Argo CD shows Unknown, "Lua returned an invalid health status".
		return "", "", fmt.Errorf("the script returned status %q, which Argo CD does not know", st)
	}
	return string(st), string(msg), nil
}

// luaValue converts JSON-shaped Go values to Lua as Argo CD's decodeValue
// does: maps become tables keyed by string, arrays tables indexed from 1,
// numbers LNumber.
func luaValue(L *lua.LState, v any) lua.LValue {
	switch v := v.(type) {
	case map[string]any:
		t := L.CreateTable(0, len(v))
		for k, item := range v {
			t.RawSetString(k, luaValue(L, item))
		}
		return t
	case []any:
		t := L.CreateTable(len(v), 0)
		for _, item := range v {
			t.Append(luaValue(L, item))
		}
		return t
	case string:
		return lua.LString(v)
	case bool:
		return lua.LBool(v)
	case int64:
		return lua.LNumber(v)
	case float64:
		return lua.LNumber(v)
	case nil:
		return lua.LNil
	}
	panic(fmt.Sprintf("no Lua value for %T", v))
}

// TestArgoCDHealthOfStatusShapes covers the shapes a status can have
// before or between the manager's writes, which the envtest spec over real
// objects ("Argo CD health and kstatus") does not stop to see, and what
// kstatus says of each (the table of charts/cxop/README.md).
func TestArgoCDHealthOfStatusShapes(t *testing.T) {
	script := healthScript(t)
	ready := func(status, reason string) map[string]any {
		return map[string]any{"type": "Ready", "status": status, "reason": reason, "message": "m"}
	}
	obj := func(kind string, generation int64, status map[string]any) map[string]any {
		o := map[string]any{"apiVersion": "cx.cxop.dev/v1alpha1", "kind": kind,
			"metadata": map[string]any{"name": "x", "namespace": "shop", "generation": generation}}
		if status != nil {
			o["status"] = status
		}
		return o
	}
	for _, c := range []struct {
		name          string
		obj           map[string]any
		status, prefx string
		kstatus       kstatus.Status
	}{
		{"just created: no status", obj("Touchpoint", 1, nil), "Progressing", "Waiting for the cxop manager", kstatus.CurrentStatus},
		{"spec changed, not yet observed", obj("Touchpoint", 3, map[string]any{"observedGeneration": int64(2), "conditions": []any{ready("True", "Reconciled")}}),
			"Progressing", "Waiting for the cxop manager", kstatus.InProgressStatus},
		{"observed, no Ready yet", obj("Journey", 1, map[string]any{"observedGeneration": int64(1)}), "Progressing", "Waiting for the Ready condition", kstatus.CurrentStatus},
		{"Ready Unknown", obj("Journey", 1, map[string]any{"observedGeneration": int64(1), "conditions": []any{ready("Unknown", "Starting")}}),
			"Progressing", "Starting: m", kstatus.InProgressStatus},
		{"Ready False, not reconciling", obj("Survey", 1, map[string]any{"observedGeneration": int64(1), "conditions": []any{ready("False", "PrometheusRuleRefused")}}),
			"Degraded", "PrometheusRuleRefused: m", kstatus.InProgressStatus},
		{"Breached, with a newer spec not yet seen", obj("CXTarget", 4, map[string]any{"observedGeneration": int64(3), "state": "Breached",
			"conditions": []any{ready("True", "Reconciled"), map[string]any{"type": "TargetMet", "status": "False", "reason": "Breached", "message": "80 < 95"}}}),
			"Degraded", "Breached: 80 < 95", kstatus.InProgressStatus},
		{"Healthy, float generation", obj("Touchpoint", 2, map[string]any{"observedGeneration": float64(2), "conditions": []any{ready("True", "Reconciled")}}),
			"Healthy", "Reconciled: m", kstatus.CurrentStatus},
	} {
		status, msg, err := argoHealth(script, c.obj)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if status != c.status || !strings.HasPrefix(msg, c.prefx) {
			t.Errorf("%s: %s %q; want %s %q...", c.name, status, msg, c.status, c.prefx)
		}
		// kstatus reads observedGeneration as an int64, as the API
		// server's JSON decodes it.
		u := &unstructured.Unstructured{Object: runtime.DeepCopyJSON(c.obj)}
		if st, ok := u.Object["status"].(map[string]any); ok {
			if g, ok := st["observedGeneration"].(float64); ok {
				st["observedGeneration"] = int64(g)
			}
		}
		res, err := kstatus.Compute(u)
		if err != nil {
			t.Fatalf("%s: kstatus: %v", c.name, err)
		}
		if res.Status != c.kstatus {
			t.Errorf("%s: kstatus %s (%s); want %s", c.name, res.Status, res.Message, c.kstatus)
		}
	}
}

// TestArgoCDSnippetCarriesTheHealthScript holds config/argocd/argocd-cm.yaml
// (what the chart's README shows Argo CD users) to health.lua, under the
// key of each kind.
func TestArgoCDSnippetCarriesTheHealthScript(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "config", "argocd", "argocd-cm.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var cm struct {
		Data map[string]string `json:"data"`
	}
	if err := yaml.UnmarshalStrict(data, &cm); err != nil {
		t.Fatal(err)
	}
	script := healthScript(t)
	for _, kind := range []string{"CXTarget", "Journey", "Survey", "Touchpoint"} {
		if got := cm.Data["resource.customizations.health.cx.cxop.dev_"+kind]; got != script {
			t.Errorf("argocd-cm.yaml: the health check of %s is not health.lua: run hack/argocd-snippet.sh", kind)
		}
	}
	if len(cm.Data) != 4 {
		t.Errorf("argocd-cm.yaml has %d entries; want the 4 kinds", len(cm.Data))
	}
	readme, err := os.ReadFile(filepath.Join("..", "charts", "cxop", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(readme), "```yaml\n"+string(data)+"```\n") {
		t.Error("charts/cxop/README.md does not show config/argocd/argocd-cm.yaml: run hack/argocd-snippet.sh")
	}
}
