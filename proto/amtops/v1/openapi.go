package amtopsv1

import _ "embed"

// OpenAPI is AdminService's REST API as an OpenAPI 2 document, generated
// by protoc-gen-openapiv2 from admin.proto and admin_gateway.yaml.
//
//go:embed admin.swagger.json
var OpenAPI []byte
