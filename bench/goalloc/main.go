// Command goalloc is the benchmark peer of `dra-driver allocate`: it reads the same manifests
// (multi-document YAML or JSON: DeviceClasses, ResourceSlices, ResourceClaims, Nodes), builds
// the kube-scheduler's structured allocator (k8s.io/dynamic-resource-allocation, features as
// Kubernetes 1.37 enables them by default) and allocates every pending claim together for one
// pod without a node: node after node in input order, the first that fits wins. It prints one
// JSON object: the node chosen and the time of each step. It is not part of the driver.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	v1 "k8s.io/api/core/v1"
	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/util/sets"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/dynamic-resource-allocation/cel"
	"k8s.io/dynamic-resource-allocation/structured"
	"sigs.k8s.io/yaml"
)

// features are the allocator features Kubernetes 1.37 turns on by default
// (pkg/features/kube_features.go at v1.37.2), mapped as the scheduler's DRA plugin maps them.
var features = structured.Features{
	AdminAccess:             true,
	ConsumableCapacity:      true,
	DeviceBindingAndStatus:  true, // DRADeviceBindingConditions && DRAResourceClaimDeviceStatus
	DeviceTaints:            true,
	FractionalCapacityRange: true,
	PartitionableDevices:    true,
	PrioritizedList:         true,
	// Off by default in 1.37: DRADeviceCompatibilityGroups, DRADerivedAttributes,
	// DRAListTypeAttributes, DRAOptionalNodeOperations.
}

type inventory struct {
	classes map[string]*resourceapi.DeviceClass
	slices  []*resourceapi.ResourceSlice
	claims  []*resourceapi.ResourceClaim
	nodes   []*v1.Node
}

type classLister map[string]*resourceapi.DeviceClass

func (l classLister) List() ([]*resourceapi.DeviceClass, error) {
	out := make([]*resourceapi.DeviceClass, 0, len(l))
	for _, c := range l {
		out = append(out, c)
	}
	return out, nil
}

func (l classLister) Get(name string) (*resourceapi.DeviceClass, error) {
	if c, ok := l[name]; ok {
		return c, nil
	}
	return nil, fmt.Errorf("device class %q not found", name)
}

type paths []string

func (p *paths) String() string     { return strings.Join(*p, ",") }
func (p *paths) Set(v string) error { *p = append(*p, v); return nil }

func manifestFiles(path string) ([]string, error) {
	info, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !info.IsDir() {
		return []string{path}, nil
	}
	var files []string
	err = filepath.WalkDir(path, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		switch filepath.Ext(p) {
		case ".yaml", ".yml", ".json":
			if !d.IsDir() {
				files = append(files, p)
			}
		}
		return nil
	})
	sort.Strings(files)
	return files, err
}

func (inv *inventory) add(doc []byte) error {
	var head struct {
		Kind  string            `json:"kind"`
		Items []json.RawMessage `json:"items"`
	}
	if err := yaml.Unmarshal(doc, &head); err != nil {
		return err
	}
	switch {
	case head.Kind == "":
		return nil // an empty document
	case strings.HasSuffix(head.Kind, "List"):
		for _, item := range head.Items {
			if err := inv.add(item); err != nil {
				return err
			}
		}
	case head.Kind == "DeviceClass":
		var c resourceapi.DeviceClass
		if err := yaml.Unmarshal(doc, &c); err != nil {
			return err
		}
		inv.classes[c.Name] = &c
	case head.Kind == "ResourceSlice":
		var s resourceapi.ResourceSlice
		if err := yaml.Unmarshal(doc, &s); err != nil {
			return err
		}
		inv.slices = append(inv.slices, &s)
	case head.Kind == "ResourceClaim":
		var c resourceapi.ResourceClaim
		if err := yaml.Unmarshal(doc, &c); err != nil {
			return err
		}
		defaultClaim(&c)
		inv.claims = append(inv.claims, &c)
	case head.Kind == "Node":
		var n v1.Node
		if err := yaml.Unmarshal(doc, &n); err != nil {
			return err
		}
		inv.nodes = append(inv.nodes, &n)
	}
	return nil
}

func read(targets []string) (*inventory, error) {
	inv := &inventory{classes: map[string]*resourceapi.DeviceClass{}}
	for _, target := range targets {
		files, err := manifestFiles(target)
		if err != nil {
			return nil, err
		}
		for _, file := range files {
			f, err := os.Open(file)
			if err != nil {
				return nil, err
			}
			reader := utilyaml.NewYAMLReader(bufio.NewReaderSize(f, 1<<20))
			for {
				doc, err := reader.Read()
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					f.Close()
					return nil, fmt.Errorf("%s: %w", file, err)
				}
				if err := inv.add(doc); err != nil {
					f.Close()
					return nil, fmt.Errorf("%s: %w", file, err)
				}
			}
			f.Close()
		}
	}
	return inv, nil
}

// defaultClaim sets what the API server's defaulting sets on create and the allocator
// relies on: allocationMode ExactCount with count 1.
func defaultClaim(claim *resourceapi.ResourceClaim) {
	for i := range claim.Spec.Devices.Requests {
		request := &claim.Spec.Devices.Requests[i]
		if request.Exactly != nil {
			defaultCount(&request.Exactly.AllocationMode, &request.Exactly.Count)
		}
		for j := range request.FirstAvailable {
			sub := &request.FirstAvailable[j]
			defaultCount(&sub.AllocationMode, &sub.Count)
		}
	}
}

func defaultCount(mode *resourceapi.DeviceAllocationMode, count *int64) {
	if *mode == "" {
		*mode = resourceapi.DeviceAllocationModeExactCount
	}
	if *mode == resourceapi.DeviceAllocationModeExactCount && *count == 0 {
		*count = 1
	}
}

// allocatedState is what the claims with an allocation hold, as the scheduler gathers it.
func allocatedState(claims []*resourceapi.ResourceClaim) structured.AllocatedState {
	state := structured.AllocatedState{
		AllocatedDevices:         sets.New[structured.DeviceID](),
		AllocatedSharedDeviceIDs: sets.New[structured.SharedDeviceID](),
		AggregatedCapacity:       structured.NewConsumedCapacityCollection(),
	}
	for _, claim := range claims {
		if claim.Status.Allocation == nil {
			continue
		}
		for _, r := range claim.Status.Allocation.Devices.Results {
			id := structured.MakeDeviceID(r.Driver, r.Pool, r.Device)
			if r.ShareID == nil {
				state.AllocatedDevices.Insert(id)
				continue
			}
			state.AllocatedSharedDeviceIDs.Insert(structured.MakeSharedDeviceID(id, r.ShareID))
			if r.ConsumedCapacity != nil {
				state.AggregatedCapacity.Insert(structured.NewDeviceConsumedCapacity(id, r.ConsumedCapacity))
			}
		}
	}
	return state
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func main() {
	var files paths
	flag.Var(&files, "f", "manifest file or directory (repeatable)")
	flag.Parse()
	if len(files) == 0 {
		fmt.Fprintln(os.Stderr, "goalloc: -f FILE|DIR is required")
		os.Exit(2)
	}
	start := time.Now()
	inv, err := read(files)
	if err != nil {
		fmt.Fprintf(os.Stderr, "goalloc: %v\n", err)
		os.Exit(2)
	}
	readDone := time.Now()

	var pending []*resourceapi.ResourceClaim
	for _, c := range inv.claims {
		if c.Status.Allocation == nil {
			pending = append(pending, c)
		}
	}
	ctx := context.Background()
	celCache := cel.NewCache(10, cel.Features{EnableConsumableCapacity: features.ConsumableCapacity})
	allocator, err := structured.NewAllocator(ctx, features, allocatedState(inv.claims),
		classLister(inv.classes), inv.slices, celCache)
	if err != nil {
		fmt.Fprintf(os.Stderr, "goalloc: %v\n", err)
		os.Exit(2)
	}
	built := time.Now()

	chosen, tried := "", 0
	var results []resourceapi.AllocationResult
	for _, node := range inv.nodes {
		tried++
		results, err = allocator.Allocate(ctx, node, pending)
		if err != nil {
			fmt.Fprintf(os.Stderr, "goalloc: node %s: %v\n", node.Name, err)
			os.Exit(2)
		}
		if results != nil {
			chosen = node.Name
			break
		}
	}
	done := time.Now()
	out, _ := json.Marshal(map[string]any{
		"node":           chosen,
		"nodes_tried":    tried,
		"pending_claims": len(pending),
		"allocated":      len(results),
		"slices":         len(inv.slices),
		"claims":         len(inv.claims),
		"read_ms":        ms(readDone.Sub(start)),
		"build_ms":       ms(built.Sub(readDone)),
		"allocate_ms":    ms(done.Sub(built)),
		"in_process_ms":  ms(done.Sub(start)),
	})
	fmt.Println(string(out))
	if chosen == "" {
		os.Exit(1)
	}
}
