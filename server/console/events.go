package console

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	pb "github.com/amtops/amtops/proto/amtops/v1"
	"github.com/amtops/amtops/server/rest"
)

// wire encodes events as the REST API encodes responses (grpc-gateway's
// default: zero values included), so the pages read one shape.
var wire = protojson.MarshalOptions{EmitUnpopulated: true}

// Source is what the hub reads (admin.Service): the same calls the REST
// API makes, so the console and the API show one truth.
type Source interface {
	FleetSummary(ctx context.Context, req *pb.FleetSummaryRequest) (*pb.FleetSummaryResponse, error)
	ListBatches(ctx context.Context, req *pb.ListBatchesRequest) (*pb.ListBatchesResponse, error)
	GetDevice(ctx context.Context, req *pb.GetDeviceRequest) (*pb.Device, error)
	GetDeviceLog(ctx context.Context, req *pb.GetDeviceLogRequest) (*pb.GetDeviceLogResponse, error)
	Authorize(ctx context.Context, method string) (context.Context, error)
}

// HubOptions tunes a Hub. The zero value is usable.
type HubOptions struct {
	// Interval between reads; default 2 s.
	Interval time.Duration
	// MaxDevices bounds the distinct devices followed at once; default
	// 200. A console asking for one more gets no device events.
	MaxDevices int
	Log        zerolog.Logger
}

// Hub is the one server-side fan-out of the consoles' live updates: each
// interval it reads the fleet summary, the recent batches and the devices
// some console has open, once, and sends the result to every subscriber.
// Redis work grows with the distinct devices open, not with consoles.
type Hub struct {
	src  Source
	opts HubOptions

	mu      sync.Mutex
	subs    map[*subscriber]struct{}
	last    map[string][]byte // the latest "summary" and "batches" data
	stopped chan struct{}     // closed when Run returns: streams end
}

type subscriber struct {
	device string
	ch     chan event
}

type event struct {
	name string
	data []byte
}

// NewHub builds a hub reading src; Run drives it.
func NewHub(src Source, o HubOptions) *Hub {
	if o.Interval <= 0 {
		o.Interval = 2 * time.Second
	}
	if o.MaxDevices <= 0 {
		o.MaxDevices = 200
	}
	return &Hub{src: src, opts: o, subs: map[*subscriber]struct{}{}, last: map[string][]byte{}, stopped: make(chan struct{})}
}

// Run reads and fans out until ctx ends; then every stream ends.
func (h *Hub) Run(ctx context.Context) error {
	defer close(h.stopped)
	t := time.NewTicker(h.opts.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if devices, listening := h.watched(); listening {
			h.tick(ctx, devices)
		}
	}
}

// watched is the set of devices open in some console, and whether any
// console listens at all.
func (h *Hub) watched() (map[string]bool, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := map[string]bool{}
	for s := range h.subs {
		if s.device != "" && len(out) < h.opts.MaxDevices {
			out[s.device] = true
		}
	}
	return out, len(h.subs) > 0
}

func (h *Hub) tick(ctx context.Context, devices map[string]bool) {
	if sum, err := h.src.FleetSummary(ctx, &pb.FleetSummaryRequest{}); err == nil {
		h.publish("summary", "", sum)
	} else if ctx.Err() == nil {
		h.opts.Log.Warn().Err(err).Msg("console: fleet summary")
	}
	if bs, err := h.src.ListBatches(ctx, &pb.ListBatchesRequest{Limit: 20}); err == nil {
		h.publish("batches", "", bs)
	} else if ctx.Err() == nil {
		h.opts.Log.Warn().Err(err).Msg("console: list batches")
	}
	for id := range devices {
		d, err := h.src.GetDevice(ctx, &pb.GetDeviceRequest{Id: id})
		if err != nil {
			continue // deleted or mistyped: its page shows the REST error
		}
		log, err := h.src.GetDeviceLog(ctx, &pb.GetDeviceLogRequest{Id: id, Limit: 200})
		if err != nil {
			continue
		}
		h.publish("device", id, &pb.ListDevicesResponse{Devices: []*pb.Device{d}}, log)
	}
}

// publish sends msgs (as one JSON array) to the subscribers of device, or
// to all when device is empty. A subscriber still holding older events
// misses this one rather than slow the others: the next tick carries the
// whole state again.
func (h *Hub) publish(name, device string, msgs ...proto.Message) {
	data := []byte{'['}
	for i, m := range msgs {
		b, err := wire.Marshal(m)
		if err != nil {
			h.opts.Log.Error().Err(err).Str("event", name).Msg("console: encode event")
			return
		}
		if i > 0 {
			data = append(data, ',')
		}
		data = append(data, b...)
	}
	data = append(data, ']')
	h.mu.Lock()
	defer h.mu.Unlock()
	if device == "" {
		h.last[name] = data
	}
	for s := range h.subs {
		if device != "" && s.device != device {
			continue
		}
		select {
		case s.ch <- event{name, data}:
		default:
		}
	}
}

func (h *Hub) subscribe(device string) *subscriber {
	s := &subscriber{device: device, ch: make(chan event, 8)}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.subs[s] = struct{}{}
	for name, data := range h.last {
		s.ch <- event{name, data}
	}
	return s
}

func (h *Hub) unsubscribe(s *subscriber) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.subs, s)
}

// Subscribers is how many streams are open.
func (h *Hub) Subscribers() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.subs)
}

// ServeHTTP streams server-sent events: "summary", "batches", and with
// ?device=ID that device's "device" event. The caller authenticates as
// for any read call (bearer token or admin client certificate).
func (h *Hub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if _, err := h.src.Authorize(rest.CallContext(r), pb.AdminService_WatchBatch_FullMethodName); err != nil {
		http.Error(w, err.Error(), rest.HTTPStatus(err))
		return
	}
	fl, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "console: streaming unsupported", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	s := h.subscribe(r.URL.Query().Get("device"))
	defer h.unsubscribe(s)
	fmt.Fprint(w, ": amtops events\n\n")
	fl.Flush()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-h.stopped:
			return
		case e := <-s.ch:
			if _, err := fmt.Fprintf(w, "event: %s\ndata: %s\n\n", e.name, e.data); err != nil {
				return
			}
			fl.Flush()
		}
	}
}
