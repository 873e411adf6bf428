package ca

import "github.com/fibmesh/fibmesh/controller/model"

// ModelLookup returns a Lookup over the model current returns at each
// call (the latest version): a pod's node and identity are its
// Workload's. current may return nil before the first model, when every
// pod is unknown.
func ModelLookup(current func() *model.Model) Lookup {
	return func(namespace, pod string) (string, string, bool) {
		m := current()
		if m == nil {
			return "", "", false
		}
		w := m.Workload(namespace + "/" + pod)
		if w == nil {
			return "", "", false
		}
		return w.Node, w.Identity, true
	}
}
