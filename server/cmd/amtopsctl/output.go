package main

import (
	"cmp"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"
	"gopkg.in/yaml.v3"

	pb "github.com/amtops/amtops/proto/amtops/v1"
)

// The views below are amtopsctl's --output json contract: plain names
// ("not-provisioned", "remove-all") rather than proto enum spellings,
// RFC 3339 times, stable field order.

type deviceView struct {
	ID                    string   `json:"id"`
	UUID                  string   `json:"uuid,omitempty"`
	HostName              string   `json:"host_name,omitempty"`
	Domain                string   `json:"domain,omitempty"`
	FQDN                  string   `json:"fqdn,omitempty"`
	IP                    string   `json:"ip,omitempty"`
	Subnet                string   `json:"subnet,omitempty"`
	Status                string   `json:"status"`
	ProvisioningState     int32    `json:"provisioning_state"`
	Link                  string   `json:"link,omitempty"`
	AMTVersion            string   `json:"amt_version,omitempty"`
	ComputerDN            string   `json:"computer_dn,omitempty"`
	Collections           []string `json:"collections"`
	SuppressAutoProvision bool     `json:"suppress_auto_provision"`
	RenamePending         bool     `json:"rename_pending"`
	LastError             string   `json:"last_error,omitempty"`
	LastErrorStep         string   `json:"last_error_step,omitempty"`
	Warnings              []string `json:"warnings,omitempty"`
	UpdatedAt             string   `json:"updated_at,omitempty"`
	ProvisionedAt         string   `json:"provisioned_at,omitempty"`
	ControlMode           string   `json:"control_mode,omitempty"`
	ADAccountDN           string   `json:"ad_account_dn,omitempty"`
	SPNs                  []string `json:"spns,omitempty"`
	// Certificates only in devices show (the list does not read them).
	Certificates []deviceCertView `json:"certificates,omitempty"`
}

type eventView struct {
	Time    string `json:"time"`
	JobID   string `json:"job_id,omitempty"`
	Phase   int32  `json:"phase"`
	Step    string `json:"step"`
	Outcome string `json:"outcome"`
	Detail  string `json:"detail,omitempty"`
	Actor   string `json:"actor,omitempty"`
}

type ruleView struct {
	Subnet      string `json:"subnet,omitempty"`
	NamePattern string `json:"name_pattern,omitempty"`
}

type collectionView struct {
	Name          string     `json:"name"`
	Description   string     `json:"description,omitempty"`
	AutoProvision bool       `json:"auto_provision"`
	Members       int32      `json:"members"`
	Rules         []ruleView `json:"rules"`
	CreatedAt     string     `json:"created_at,omitempty"`
}

type batchView struct {
	ID              string            `json:"id"`
	Kind            string            `json:"kind"`
	Origin          string            `json:"origin,omitempty"`
	Requester       string            `json:"requester,omitempty"`
	Total           int32             `json:"total"`
	Succeeded       int32             `json:"succeeded"`
	Failed          int32             `json:"failed"`
	Cancelled       int32             `json:"cancelled"`
	Pending         int32             `json:"pending"`
	Done            bool              `json:"done"`
	CancelRequested bool              `json:"cancel_requested"`
	Options         map[string]string `json:"options,omitempty"`
	Warnings        []string          `json:"warnings,omitempty"`
	CreatedAt       string            `json:"created_at,omitempty"`
}

type jobView struct {
	ID       string `json:"id"`
	DeviceID string `json:"device_id"`
	FQDN     string `json:"fqdn,omitempty"`
	Kind     string `json:"kind"`
	State    string `json:"state"`
	Attempts int32  `json:"attempts"`
	// Phase2Attempts counts as the operations log's "attempt N" does.
	Phase2Attempts int32  `json:"phase2_attempts"`
	ErrorStep      string `json:"error_step,omitempty"`
	LastError      string `json:"last_error,omitempty"`
}

// attempts is the ATTEMPTS cell: phase 1's, then phase 2's after a "+"
// once phase 2 has run ("1+5": phase 2's fifth attempt, as the log says).
func (j jobView) attempts() string {
	if j.Phase2Attempts == 0 {
		return fmt.Sprint(j.Attempts)
	}
	return fmt.Sprintf("%d+%d", j.Attempts, j.Phase2Attempts)
}

// device is how a job's device is named in tables: its FQDN, else its ID.
func (j jobView) device() string { return cmp.Or(j.FQDN, j.DeviceID) }

type agentView struct {
	ID            string   `json:"id"`
	Name          string   `json:"name,omitempty"`
	Subnets       []string `json:"subnets"`
	Online        bool     `json:"online"`
	LastHeartbeat string   `json:"last_heartbeat,omitempty"`
	EnrolledAt    string   `json:"enrolled_at,omitempty"`
	Version       string   `json:"version,omitempty"`
	Address       string   `json:"address,omitempty"`
	JobsInFlight  int32    `json:"jobs_in_flight"`
	Capacity      int32    `json:"capacity"`
	Hellos        int64    `json:"hellos_received"`
}

type tokenView struct {
	Name      string `json:"name"`
	Role      string `json:"role"`
	CreatedAt string `json:"created_at,omitempty"`
}

func tsString(t *timestamppb.Timestamp) string {
	if t == nil {
		return ""
	}
	return t.AsTime().UTC().Format(time.RFC3339)
}

// enumName turns JOB_KIND_REMOVE_ALL into remove-all given the prefix.
func enumName(name, prefix string) string {
	return strings.ReplaceAll(strings.ToLower(strings.TrimPrefix(name, prefix)), "_", "-")
}

func statusName(s pb.DeviceStatus) string { return enumName(s.String(), "DEVICE_STATUS_") }
func kindName(k pb.JobKind) string        { return enumName(k.String(), "JOB_KIND_") }
func outcomeName(o pb.Outcome) string     { return enumName(o.String(), "OUTCOME_") }

func linkName(l pb.Link) string {
	switch l {
	case pb.Link_LINK_WIRED:
		return "wired"
	case pb.Link_LINK_WIRED_8021X:
		return "8021x-wired"
	case pb.Link_LINK_WIRELESS:
		return "wireless"
	}
	return ""
}

// parseStatus reads a status as people write it (not-provisioned).
func parseStatus(s string) (pb.DeviceStatus, error) {
	if s == "" {
		return pb.DeviceStatus_DEVICE_STATUS_UNSPECIFIED, nil
	}
	v, ok := pb.DeviceStatus_value["DEVICE_STATUS_"+strings.ToUpper(strings.ReplaceAll(s, "-", "_"))]
	if !ok || v == 0 {
		return 0, usage("--status %q: want one of %s", s, strings.Join(statusNames(), ", "))
	}
	return pb.DeviceStatus(v), nil
}

func statusNames() []string {
	var out []string
	for i := int32(1); ; i++ {
		n, ok := pb.DeviceStatus_name[i]
		if !ok {
			return out
		}
		out = append(out, enumName(n, "DEVICE_STATUS_"))
	}
}

func viewDevice(d *pb.Device) deviceView {
	cols := d.GetCollections()
	if cols == nil {
		cols = []string{}
	}
	return deviceView{ID: d.GetId(), UUID: d.GetUuid(), HostName: d.GetHostName(), Domain: d.GetDomain(), FQDN: d.GetFqdn(),
		IP: d.GetIp(), Subnet: d.GetSubnet(), Status: statusName(d.GetStatus()), ProvisioningState: d.GetProvisioningState(),
		Link: linkName(d.GetLink()), AMTVersion: d.GetAmtVersion(), ComputerDN: d.GetComputerDn(), Collections: cols,
		SuppressAutoProvision: d.GetSuppressAutoProvision(), RenamePending: d.GetRenamePending(), LastError: d.GetLastError(),
		LastErrorStep: d.GetLastErrorStep(), Warnings: d.GetWarnings(), UpdatedAt: tsString(d.GetUpdatedAt()),
		ProvisionedAt: tsString(d.GetProvisionedAt()), ControlMode: d.GetControlMode(), ADAccountDN: d.GetAdAccountDn(),
		SPNs: d.GetSpns(), Certificates: certViews(d.GetCertificates())}
}

func certViews(cs []*pb.Certificate) []deviceCertView {
	var out []deviceCertView
	for _, c := range cs {
		out = append(out, viewDeviceCert(c))
	}
	return out
}

func viewEvent(e *pb.OperationEvent) eventView {
	return eventView{Time: tsString(e.GetTime()), JobID: e.GetJobId(), Phase: e.GetPhase(), Step: e.GetStep(),
		Outcome: outcomeName(e.GetOutcome()), Detail: e.GetDetail(), Actor: e.GetActor()}
}

func viewCollection(c *pb.Collection) collectionView {
	rules := []ruleView{}
	for _, r := range c.GetRules() {
		rules = append(rules, ruleView{Subnet: r.GetSubnet(), NamePattern: r.GetNamePattern()})
	}
	return collectionView{Name: c.GetName(), Description: c.GetDescription(), AutoProvision: c.GetAutoProvision(),
		Members: c.GetMembers(), Rules: rules, CreatedAt: tsString(c.GetCreatedAt())}
}

func viewBatch(b *pb.Batch) batchView {
	return batchView{ID: b.GetId(), Kind: kindName(b.GetKind()), Origin: b.GetOrigin(), Requester: b.GetRequester(),
		Total: b.GetTotal(), Succeeded: b.GetSucceeded(), Failed: b.GetFailed(), Cancelled: b.GetCancelled(),
		Pending: b.GetTotal() - b.GetSucceeded() - b.GetFailed() - b.GetCancelled(), Done: b.GetDone(),
		CancelRequested: b.GetCancelRequested(), Options: b.GetOptions(), Warnings: b.GetWarnings(), CreatedAt: tsString(b.GetCreatedAt())}
}

func viewJob(j *pb.Job) jobView {
	return jobView{ID: j.GetId(), DeviceID: j.GetDeviceId(), Kind: kindName(j.GetKind()), State: j.GetState(),
		Attempts: j.GetAttempts(), Phase2Attempts: j.GetPhase2Attempts(), ErrorStep: j.GetErrorStep(), LastError: j.GetLastError()}
}

func viewAgent(ag *pb.Agent) agentView {
	subnets := ag.GetSubnets()
	if subnets == nil {
		subnets = []string{}
	}
	return agentView{ID: ag.GetId(), Name: ag.GetName(), Subnets: subnets, LastHeartbeat: tsString(ag.GetLastHeartbeat()),
		EnrolledAt: tsString(ag.GetEnrolledAt()), Version: ag.GetVersion(), Address: ag.GetAddress(),
		JobsInFlight: ag.GetJobsInFlight(), Capacity: ag.GetCapacity(), Hellos: ag.GetHellosReceived()}
}

func viewToken(t *pb.AdminToken) tokenView {
	return tokenView{Name: t.GetName(), Role: t.GetRole(), CreatedAt: tsString(t.GetCreatedAt())}
}

// outputs are the --output formats; wide is a table with more columns
// where a command has them (devices list: the last error, summarised).
// name prints only what each item is named by (its ID, else its name),
// one a line, for scripts: BATCH=$(amtopsctl jobs list --limit 1 -o name).
var outputs = []string{"table", "wide", "json", "yaml", "csv", "name"}

// structured reports whether --output wants data (json, yaml, name)
// rather than rows (table or csv).
func (a *app) structured() bool {
	return a.output == "json" || a.output == "yaml" || a.output == "name"
}

// printData writes v as indented JSON or, with -o yaml, as YAML with the
// same field names and order; with -o name, the names in it.
func (a *app) printData(v any) error {
	if a.output == "name" {
		b, err := json.Marshal(v)
		if err != nil {
			return err
		}
		var data any
		if err := json.Unmarshal(b, &data); err != nil {
			return err
		}
		for _, n := range names(data) {
			if _, err := fmt.Fprintln(a.stdout, n); err != nil {
				return err
			}
		}
		return nil
	}
	if a.output != "yaml" {
		enc := json.NewEncoder(a.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	// JSON is YAML: decoding it into a node keeps the order of the fields.
	var n yaml.Node
	if err := yaml.Unmarshal(b, &n); err != nil {
		return err
	}
	blockStyle(&n)
	enc := yaml.NewEncoder(a.stdout)
	enc.SetIndent(2)
	if err := enc.Encode(&n); err != nil {
		return err
	}
	return enc.Close()
}

// blockStyle drops the flow style and quotes JSON brought in, so the
// encoder writes plain block YAML (it still quotes where YAML needs it).
// Empty lists and maps stay in flow style ([] and {}).
func blockStyle(n *yaml.Node) {
	n.Style = 0
	if (n.Kind == yaml.SequenceNode || n.Kind == yaml.MappingNode) && len(n.Content) == 0 {
		n.Style = yaml.FlowStyle
	}
	for _, c := range n.Content {
		blockStyle(c)
	}
}

// table writes aligned columns, or CSV with -o csv.
type table struct {
	tw  *tabwriter.Writer
	csv *csv.Writer
}

func (a *app) newTable(header ...string) *table {
	t := &table{}
	if a.output == "csv" {
		t.csv = csv.NewWriter(a.stdout)
	} else {
		t.tw = tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
	}
	t.row(header...)
	return t
}

func (t *table) row(cells ...string) {
	if t.csv != nil {
		_ = t.csv.Write(cells) // the error is kept for flush
		return
	}
	for i, c := range cells {
		if c == "" {
			cells[i] = "-"
		}
	}
	fmt.Fprintln(t.tw, strings.Join(cells, "\t"))
}

func (t *table) flush() error {
	if t.csv != nil {
		t.csv.Flush()
		return t.csv.Error()
	}
	return t.tw.Flush()
}

// keyValues prints "key: value" lines, skipping empty values; with -o csv
// a FIELD,VALUE table.
func (a *app) keyValues(kv ...string) error {
	if a.output == "csv" {
		t := a.newTable("FIELD", "VALUE")
		for i := 0; i+1 < len(kv); i += 2 {
			if kv[i+1] != "" {
				t.row(kv[i], kv[i+1])
			}
		}
		return t.flush()
	}
	tw := tabwriter.NewWriter(a.stdout, 0, 4, 1, ' ', 0)
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] != "" {
			fmt.Fprintf(tw, "%s:\t%s\n", kv[i], kv[i+1])
		}
	}
	return tw.Flush()
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func optionsString(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + m[k]
	}
	return strings.Join(parts, ",")
}

func rulesString(rs []ruleView) string {
	parts := make([]string, 0, len(rs))
	for _, r := range rs {
		switch {
		case r.Subnet != "" && r.NamePattern != "":
			parts = append(parts, r.Subnet+"&"+r.NamePattern)
		case r.Subnet != "":
			parts = append(parts, r.Subnet)
		default:
			parts = append(parts, r.NamePattern)
		}
	}
	return strings.Join(parts, " ")
}

// names are the IDs (else names) of the objects in v: of each element of a
// list, of an object that has one, or else of the objects its fields hold
// (jobs show: the batch, then its jobs).
func names(v any) []string {
	switch x := v.(type) {
	case []any:
		var out []string
		for _, e := range x {
			out = append(out, names(e)...)
		}
		return out
	case map[string]any:
		for _, k := range []string{"id", "name"} {
			if s, ok := x[k].(string); ok && s != "" {
				return []string{s}
			}
		}
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		// Objects before lists: the batch before its jobs.
		slices.SortFunc(keys, func(p, q string) int {
			_, pl := x[p].([]any)
			_, ql := x[q].([]any)
			if pl != ql {
				if pl {
					return 1
				}
				return -1
			}
			return strings.Compare(p, q)
		})
		var out []string
		for _, k := range keys {
			out = append(out, names(x[k])...)
		}
		return out
	}
	return nil
}
