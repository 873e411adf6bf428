package fibv1

import "testing"

func TestWorkloadName(t *testing.T) {
	for _, tc := range []struct {
		name   string
		pod    string
		labels map[string]string
		want   string
	}{
		{"deployment by its hash label", "reviews-v1-7d9f8c6b5-x2x4q", map[string]string{LabelPodTemplateHash: "7d9f8c6b5"}, "reviews-v1"},
		{"deployment by name", "reviews-v1-7d9f8c6b5-x2x4q", nil, "reviews-v1"},
		{"hash label not in the name", "reviews-v1-7d9f8c6b5-x2x4q", map[string]string{LabelPodTemplateHash: "other"}, "reviews-v1"},
		{"hash label, name of its own", "db-0", map[string]string{LabelPodTemplateHash: "zzz"}, "db-0"},
		{"workload-name label first", "x-abc-def", map[string]string{LabelWorkloadName: "named", LabelPodTemplateHash: "abc"}, "named"},
		{"empty workload-name label", "fluentd-x2x4q", map[string]string{LabelWorkloadName: ""}, "fluentd"},
		{"daemonset", "node-exporter-x2kzq", nil, "node-exporter"},
		{"vowels: not a generated suffix", "web-abcde", nil, "web-abcde"},
		{"vowels in the suffix after a hash", "frontend-5c6d7f8b9-abcde", nil, "frontend-5c6d7f8b9-abcde"},
		{"deployment, 9-character hash", "frontend-5c6d7f8b9-bcdfg", nil, "frontend"},
		{"bare pod", "client", map[string]string{LabelApp: "client"}, "client"},
		{"statefulset member", "web-0", nil, "web-0"},
		{"too short for a hash", "ratings-v1-v2", nil, "ratings-v1-v2"},
		{"short part is no hash: a daemonset-like suffix", "my-app-v2-bcdfg", nil, "my-app-v2"},
		{"no dash", "node1-pod1", nil, "node1-pod1"},
		{"hash too long", "a-bcdfghjklmn-bcdfg", nil, "a-bcdfghjklmn"},
		{"empty", "", nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := WorkloadName(tc.pod, tc.labels); got != tc.want {
				t.Errorf("WorkloadName(%q, %v) = %q, want %q", tc.pod, tc.labels, got, tc.want)
			}
		})
	}
}
