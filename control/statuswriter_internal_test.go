package control

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestKeepTransitionTimes: a condition whose status did not change keeps
// the time it last changed; one that did takes the new time; listeners
// by name and parents by parentRef are matched, not by position.
func TestKeepTransitionTimes(t *testing.T) {
	var cur map[string]any
	json.Unmarshal([]byte(`{
		"conditions": [{"type": "Accepted", "status": "True", "lastTransitionTime": "T0"}, {"type": "Programmed", "status": "False", "lastTransitionTime": "T0"}],
		"listeners": [{"name": "b", "conditions": [{"type": "Accepted", "status": "True", "lastTransitionTime": "T1"}]},
		              {"name": "a", "conditions": [{"type": "Accepted", "status": "True", "lastTransitionTime": "T2"}]}],
		"parents": [{"parentRef": {"name": "gw", "port": 8080}, "conditions": [{"type": "Accepted", "status": "True", "lastTransitionTime": "T3"}]}]}`), &cur)
	st := stamp{now: "NOW", generation: 2}
	next := map[string]any{
		"conditions": st.conds([]Condition{{Type: "Accepted", Status: "True"}, {Type: "Programmed", Status: "True"}}),
		"listeners": []map[string]any{{"name": "a", "conditions": st.conds([]Condition{{Type: "Accepted", Status: "True"}})},
			{"name": "c", "conditions": st.conds([]Condition{{Type: "Accepted", Status: "True"}})}},
		"parents": []any{map[string]any{"parentRef": map[string]any{"port": uint16(8080), "name": "gw"},
			"conditions": st.conds([]Condition{{Type: "Accepted", Status: "True"}})}},
	}
	keepTransitionTimes(next, cur)
	got := mustJSON([]any{next["conditions"], next["listeners"], next["parents"]})
	for _, want := range []string{`"lastTransitionTime":"T0","message":"","observedGeneration":2,"reason":"","status":"True","type":"Accepted"`,
		`"lastTransitionTime":"NOW","message":"","observedGeneration":2,"reason":"","status":"True","type":"Programmed"`,
		`"lastTransitionTime":"T2","message":"","observedGeneration":2,"reason":"","status":"True","type":"Accepted"}],"name":"a"`,
		`"lastTransitionTime":"NOW","message":"","observedGeneration":2,"reason":"","status":"True","type":"Accepted"}],"name":"c"`,
		`"lastTransitionTime":"T3"`} {
		if !strings.Contains(got, want) {
			t.Errorf("no %s in\n%s", want, got)
		}
	}
}
