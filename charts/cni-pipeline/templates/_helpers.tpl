{{/* The chart name, or nameOverride. */}}
{{- define "cni-pipeline.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Object names: fullnameOverride, else the release name when it already holds the chart
name (so `helm install cni-pipeline` gives "cni-pipeline"), else RELEASE-NAME. */}}
{{- define "cni-pipeline.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "cni-pipeline.selectorLabels" -}}
app.kubernetes.io/name: {{ include "cni-pipeline.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "cni-pipeline.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "cni-pipeline.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "cni-pipeline.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "cni-pipeline.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* image.override (a full reference) wins; else repository:tag, the tag defaulting to the
chart's appVersion. */}}
{{- define "cni-pipeline.image" -}}
{{- if .Values.image.override }}
{{- .Values.image.override }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* An env value as text. Helm reads unquoted numbers as floats: a whole one is written as an
integer (60, not 6e+01), so `METRIC_UPDATE_INTERVAL: 60` means what it says. */}}
{{- define "cni-pipeline.envValue" -}}
{{- if and (kindIs "float64" .) (eq (float64 (int64 .)) .) }}
{{- int64 . }}
{{- else }}
{{- toString . }}
{{- end }}
{{- end }}

{{/* The Lease leader election uses: leaderElection.leaseName, else the fullname. */}}
{{- define "cni-pipeline.leaseName" -}}
{{- default (include "cni-pipeline.fullname" .) .Values.leaderElection.leaseName }}
{{- end }}

{{/* The path the ConfigMap's config is mounted at. */}}
{{- define "cni-pipeline.configPath" -}}
{{- if .Values.reloadConfig }}
{{- printf "%s/config.yaml" (include "cni-pipeline.configDir" .) }}
{{- else }}
{{- "/etc/cni-pipeline/config.yaml" }}
{{- end }}
{{- end }}

{{/* The directory the ConfigMap is mounted as, with reloadConfig. */}}
{{- define "cni-pipeline.configDir" -}}
/etc/cni-pipeline/config
{{- end }}

{{/* `config` parsed, as JSON; fails naming the value when it is not a YAML mapping. */}}
{{- define "cni-pipeline.configData" -}}
{{- if not (kindIs "string" .Values.config) }}
{{- fail "config: give the pipeline config as YAML text (e.g. --set-file config=my.yaml, or config: | in a values file)" }}
{{- end }}
{{- $data := fromYaml .Values.config }}
{{- if hasKey $data "Error" }}
{{- fail (printf "config: not a YAML mapping: %s" $data.Error) }}
{{- end }}
{{- toJson $data }}
{{- end }}

{{/* A value the chart derives RBAC or ports from must be literal: the chart cannot see the
pod's environment that ${env:...} would read. */}}
{{- define "cni-pipeline.literal" -}}
{{- $value := index . 1 }}
{{- if contains "${" (toString $value) }}
{{- fail (printf "config: %s is %q; the chart derives RBAC and ports from it, so write it without ${env:...}" (index . 0) (toString $value)) }}
{{- end }}
{{- toString $value }}
{{- end }}

{{/* The port of a host:port endpoint. */}}
{{- define "cni-pipeline.endpointPort" -}}
{{- $text := include "cni-pipeline.literal" . }}
{{- $port := regexFind "[0-9]+$" $text }}
{{- if not $port }}
{{- fail (printf "config: %s %q has no port (host:port)" (index . 0) $text) }}
{{- end }}
{{- $port }}
{{- end }}

{{/*
What the pipeline needs from the cluster, as JSON:
  pods:          {NAMESPACE: PROXY} for each namespace a receiver discovers aws-node pods in
                 ("*": all namespaces); PROXY: some receiver there scrapes through pods/proxy.
  nodes:         some receiver has node_metadata on.
  telemetryPort: the port of service.telemetry.endpoint.
  exporterPorts: the ports the pipeline's prometheus exporters serve.
  cloudwatch:    the pipeline publishes to CloudWatch.
  subnetNodes:   an aws_subnets receiver lists the nodes (from_nodes).
  eniconfigs:    an aws_subnets receiver lists the ENIConfigs (from_eniconfigs).
Drop-in mode (no config) is the Go helper's pipeline: aws-node in kube-system through the pod
proxy, and :61681 when USE_PROMETHEUS. With a config, only receivers and exporters some pipeline
uses count (the others are never built), and the defaults are those of
receivers/prometheus (namespace kube-system, mode direct, node_metadata false).
*/}}
{{- define "cni-pipeline.plan" -}}
{{- $plan := dict "pods" (dict) "nodes" false "telemetryPort" 8888 "exporterPorts" (list) "cloudwatch" false "subnetNodes" false "eniconfigs" false }}
{{- if .Values.sharding.enabled }}
{{- if .Values.config }}
{{- fail "sharding.enabled: the chart writes the shards' and the gateway's configs (as configs/sharded/); leave config empty" }}
{{- end }}
{{- if .Values.subnets.enabled }}
{{- fail "subnets.enabled: not with sharding.enabled (run the aws_subnets receiver in a config of its own, configs/cloudwatch-subnets.yaml)" }}
{{- end }}
{{- /* The shards discover aws-node in kube-system; the gateway publishes to CloudWatch. */}}
{{- $_ := set $plan.pods "kube-system" (eq .Values.sharding.scrapeMode "apiserver_proxy") }}
{{- $_ := set $plan "cloudwatch" true }}
{{- else if not .Values.config }}
{{- $_ := set $plan.pods "kube-system" true }}
{{- $_ := set $plan "cloudwatch" (has (lower (toString .Values.env.USE_CLOUDWATCH)) (list "" "true" "yes" "1" "on")) }}
{{- if has (lower (toString .Values.env.USE_PROMETHEUS)) (list "true" "yes" "1" "on") }}
{{- $_ := set $plan "exporterPorts" (list 61681) }}
{{- end }}
{{- if .Values.subnets.enabled }}
{{- $_ := set $plan "subnetNodes" true }}
{{- $_ := set $plan "eniconfigs" true }}
{{- end }}
{{- else }}
{{- if .Values.subnets.enabled }}
{{- fail "subnets.enabled: with config set, add an aws_subnets receiver to the config instead (see configs/cloudwatch-subnets.yaml); the chart derives its RBAC from the config" }}
{{- end }}
{{- $config := include "cni-pipeline.configData" . | fromJson }}
{{- $receivers := $config.receivers | default dict }}
{{- $exporters := $config.exporters | default dict }}
{{- $service := $config.service | default dict }}
{{- $telemetry := $service.telemetry | default dict }}
{{- if hasKey $telemetry "endpoint" }}
{{- if not $telemetry.endpoint }}
{{- fail "config: service.telemetry.endpoint is empty; the chart's probes and Service need it" }}
{{- end }}
{{- $_ := set $plan "telemetryPort" (include "cni-pipeline.endpointPort" (list "service.telemetry.endpoint" $telemetry.endpoint) | int) }}
{{- end }}
{{- $usedReceivers := list }}
{{- $usedExporters := list }}
{{- range $pipelineID, $pipeline := ($service.pipelines | default dict) }}
{{- $pipeline = $pipeline | default dict }}
{{- $usedReceivers = concat $usedReceivers ($pipeline.receivers | default list) }}
{{- $usedExporters = concat $usedExporters ($pipeline.exporters | default list) }}
{{- end }}
{{- range $id := $usedReceivers | uniq | sortAlpha }}
{{- $receiver := get $receivers $id | default dict }}
{{- if eq (first (splitList "/" $id)) "aws_subnets" }}
{{- if ne (include "cni-pipeline.literal" (list (printf "receivers.%s.from_nodes" $id) (dig "from_nodes" true $receiver))) "false" }}
{{- $_ := set $plan "subnetNodes" true }}
{{- end }}
{{- if ne (include "cni-pipeline.literal" (list (printf "receivers.%s.from_eniconfigs" $id) (dig "from_eniconfigs" true $receiver))) "false" }}
{{- $_ := set $plan "eniconfigs" true }}
{{- end }}
{{- end }}
{{- $sd := get $receiver "kubernetes_sd" }}
{{- if and (eq (first (splitList "/" $id)) "prometheus") (kindIs "map" $sd) }}
{{- $where := printf "receivers.%s.kubernetes_sd" $id }}
{{- $namespace := "kube-system" }}
{{- if hasKey $sd "namespace" }}
{{- $namespace = include "cni-pipeline.literal" (list (printf "%s.namespace" $where) $sd.namespace) | default "*" }}
{{- end }}
{{- $proxy := eq (include "cni-pipeline.literal" (list (printf "%s.mode" $where) ($sd.mode | default "direct"))) "apiserver_proxy" }}
{{- $_ := set $plan.pods $namespace (or (index $plan.pods $namespace) $proxy) }}
{{- if eq (include "cni-pipeline.literal" (list (printf "%s.node_metadata" $where) $sd.node_metadata)) "true" }}
{{- $_ := set $plan "nodes" true }}
{{- end }}
{{- end }}
{{- end }}
{{- $ports := list }}
{{- range $id := $usedExporters | uniq | sortAlpha }}
{{- if eq (first (splitList "/" $id)) "awscloudwatch" }}
{{- $_ := set $plan "cloudwatch" true }}
{{- end }}
{{- if eq (first (splitList "/" $id)) "prometheus" }}
{{- $exporter := get $exporters $id | default dict }}
{{- $endpoint := $exporter.endpoint | default "0.0.0.0:61681" }}
{{- $ports = append $ports (include "cni-pipeline.endpointPort" (list (printf "exporters.%s.endpoint" $id) $endpoint) | int) }}
{{- end }}
{{- end }}
{{- $_ := set $plan "exporterPorts" ($ports | uniq) }}
{{- end }}
{{- toJson $plan }}
{{- end }}

{{/* The container's ports, by name: telemetry, then prometheus, prometheus-2, ... */}}
{{- define "cni-pipeline.ports" -}}
{{- $plan := include "cni-pipeline.plan" . | fromJson }}
{{- $ports := list (dict "name" "telemetry" "port" ($plan.telemetryPort | int)) }}
{{- range $i, $port := $plan.exporterPorts }}
{{- $ports = append $ports (dict "name" (ternary "prometheus" (printf "prometheus-%d" (add $i 1)) (eq $i 0)) "port" ($port | int)) }}
{{- end }}
{{- toJson (dict "ports" $ports) }}
{{- end }}

{{/* Sharding: the gateway's pods, by name, and the address each shard sends its partials to. */}}
{{- define "cni-pipeline.gateways" -}}
{{- $fullname := include "cni-pipeline.fullname" . }}
{{- $gateways := list }}
{{- range $i := until (.Values.sharding.gateway.replicas | int) }}
{{- $gateways = append $gateways (dict "name" (printf "gateway-%d" $i) "endpoint" (printf "%s-gateway-%d.%s-gateway.%s.svc:4317" $fullname $i $fullname $.Release.Namespace)) }}
{{- end }}
{{- toJson (dict "gateways" $gateways) }}
{{- end }}

{{/* Sharding: the shards' and the gateway's configs (the ConfigMap's data; its checksum rolls
the pods when it changes). */}}
{{- define "cni-pipeline.shardedConfigs" -}}
{{- $gateways := (include "cni-pipeline.gateways" . | fromJson).gateways }}
{{- $interval := include "cni-pipeline.envValue" .Values.env.METRIC_UPDATE_INTERVAL -}}
shard.yaml: |
  receivers:
    prometheus:
      scrape_interval: {{ $interval }}s
      kubernetes_sd:
        namespace: kube-system
        label_selector: k8s-app=aws-node
        mode: {{ .Values.sharding.scrapeMode }}
      sharding:
        shards: {{ .Values.sharding.shards | int }}   # shard: the pod's ordinal
  processors:
    cni_aggregate:
      output: partials
  exporters:
    {{- range $gateways }}
    otlp/{{ .name }}:
      endpoint: {{ .endpoint }}
      tls: {insecure: true}
      compression: gzip
      temporality: delta
    {{- end }}
  service:
    pipelines:
      metrics:
        receivers: [prometheus]
        processors: [cni_aggregate]
        exporters: [{{ range $i, $g := $gateways }}{{ if $i }}, {{ end }}otlp/{{ $g.name }}{{ end }}]
    telemetry:
      endpoint: 0.0.0.0:8888
      log_level: info           # extraArgs: ["--log-level", "debug"] for more
gateway.yaml: |
  receivers:
    otlp:
      protocols:
        grpc:
          endpoint: 0.0.0.0:4317
  processors:
    cni_combine: {}
  exporters:
    awscloudwatch:
      namespace: Kubernetes
      cluster_id: ${env:AWS_CLUSTER_ID:-}
      region: ${env:AWS_REGION:-}
  service:
    pipelines:
      metrics:
        receivers: [otlp]
        processors: [cni_combine]
        exporters: [awscloudwatch]
    telemetry:
      endpoint: 0.0.0.0:8888
      log_level: info           # extraArgs: ["--log-level", "debug"] for more
{{- end }}
