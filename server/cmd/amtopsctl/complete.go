package main

import (
	"context"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	pb "github.com/amtops/amtops/proto/amtops/v1"
)

// Shell completion of the names a command takes, asked of the server
// with the same flags and credentials as the command itself: devices
// (by FQDN), batches and collections. Which argument is which comes from
// the command's Use line (DEVICE..., BATCH, NAME), so a new command
// completes without extra code.

// addCompletions walks the tree and gives every command whose arguments
// are devices, batches or collections a completion function.
func (a *app) addCompletions(c *cobra.Command) {
	for _, sub := range c.Commands() {
		a.addCompletions(sub)
	}
	if c.Flags().Lookup("collection") != nil {
		_ = c.RegisterFlagCompletionFunc("collection", func(cmd *cobra.Command, _ []string, prefix string) ([]string, cobra.ShellCompDirective) {
			return a.complete(cmd, "collection", prefix)
		})
	}
	if c.ValidArgs != nil || c.ValidArgsFunction != nil {
		return
	}
	kinds := argKinds(c)
	if len(kinds) == 0 {
		return
	}
	c.ValidArgsFunction = func(cmd *cobra.Command, args []string, prefix string) ([]string, cobra.ShellCompDirective) {
		n := len(args)
		switch {
		case n < len(kinds):
			return a.complete(cmd, kinds[n], prefix)
		case strings.HasSuffix(kinds[len(kinds)-1], "..."):
			return a.complete(cmd, kinds[len(kinds)-1], prefix)
		}
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
}

// argKinds reads "show DEVICE", "add NAME [DEVICE...]" as the kinds of
// the positional arguments: device, batch, collection, "" for others; a
// trailing "..." repeats the last.
func argKinds(c *cobra.Command) []string {
	var kinds []string
	found := false
	for _, w := range strings.Fields(c.Use)[1:] {
		if strings.HasPrefix(w, "-") || strings.HasPrefix(w, "(") {
			continue
		}
		name := strings.Trim(w, "[]")
		more := strings.HasSuffix(name, "...")
		kind := ""
		switch strings.TrimSuffix(name, "...") {
		case "DEVICE":
			kind = "device"
		case "BATCH":
			kind = "batch"
		case "NAME":
			if c.HasParent() && c.Parent().Name() == "collections" {
				kind = "collection"
			}
		}
		found = found || kind != ""
		if more {
			kind += "..."
		}
		kinds = append(kinds, kind)
	}
	if !found {
		return nil
	}
	return kinds
}

// complete lists the names of kind starting with prefix; nothing when
// the server cannot be asked (completion must never print an error).
func (a *app) complete(cmd *cobra.Command, kind, prefix string) ([]string, cobra.ShellCompDirective) {
	var names []string
	add := func(n string) {
		if n != "" && strings.HasPrefix(strings.ToLower(n), strings.ToLower(prefix)) {
			names = append(names, n)
		}
	}
	switch strings.TrimSuffix(kind, "...") {
	case "device":
		resp, _ := call(cmd, a, func(ctx context.Context, c pb.AdminServiceClient) (*pb.ListDevicesResponse, error) {
			return c.ListDevices(ctx, &pb.ListDevicesRequest{Limit: 1000})
		})
		for _, d := range resp.GetDevices() {
			add(d.GetFqdn())
		}
	case "batch":
		resp, _ := call(cmd, a, func(ctx context.Context, c pb.AdminServiceClient) (*pb.ListBatchesResponse, error) {
			return c.ListBatches(ctx, &pb.ListBatchesRequest{Limit: 50})
		})
		for _, b := range resp.GetBatches() {
			add(b.GetId())
		}
	case "collection":
		resp, _ := call(cmd, a, func(ctx context.Context, c pb.AdminServiceClient) (*pb.ListCollectionsResponse, error) {
			return c.ListCollections(ctx, &pb.ListCollectionsRequest{})
		})
		for _, c := range resp.GetCollections() {
			add(c.GetName())
		}
	}
	slices.Sort(names)
	return names, cobra.ShellCompDirectiveNoFileComp
}
