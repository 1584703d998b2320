/*
 * A Mosquitto 2.0 plugin that makes the broker's ACL refusals visible to ingest.
 *
 * Loaded after the dynamic-security plugin. Mosquitto asks ACL callbacks in the order plugins
 * were loaded and stops at the first that does not defer; dynamic security decides every check
 * one of its ACLs matches and defers the rest (its default access for publishing and
 * subscribing is "deny"). So this callback sees exactly the publishes and subscriptions about
 * to be refused. For each it publishes a notice, QoS 1, on REFUSALS_TOPIC (outside alatau/, which
 * only ingest may read; not a "$" topic, since Mosquitto 2.0 delivers those to no shared
 * subscription) and defers again, so the refusal stands: the broker denies what
 * every plugin deferred. Reads (deliveries) are not reported: a refused delivery is a refused
 * subscription reported before.
 *
 * The notice is one JSON object: {"access": "publish"|"subscribe", "client_id", "username",
 * "topic", "qos", "retain", "payload_bytes", "payload_hex"} with at most MAX_PAYLOAD bytes of
 * the refused payload. Only the few declarations of the plugin API (version 5, Mosquitto 2.0)
 * it uses are written out here, so building it needs no development package.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MOSQ_EVT_ACL_CHECK 2
#define MOSQ_ACL_WRITE 0x02
#define MOSQ_ACL_SUBSCRIBE 0x04
#define MOSQ_ERR_SUCCESS 0
#define MOSQ_ERR_NOMEM 1
#define MOSQ_ERR_PLUGIN_DEFER 17

#define REFUSALS_TOPIC "alatau-broker/refused"
#define MAX_PAYLOAD 4096

struct mosquitto;
struct mosquitto_opt;
typedef struct mosquitto_plugin_id_t mosquitto_plugin_id_t;
typedef struct mqtt5__property mosquitto_property;

struct mosquitto_evt_acl_check {
	void *future;
	struct mosquitto *client;
	const char *topic;
	const void *payload;
	mosquitto_property *properties;
	int access;
	uint32_t payloadlen;
	uint8_t qos;
	bool retain;
	void *future2[4];
};

typedef int (*MOSQ_FUNC_generic_callback)(int, void *, void *);

int mosquitto_callback_register(mosquitto_plugin_id_t *identifier, int event,
		MOSQ_FUNC_generic_callback cb_func, const void *event_data, void *userdata);
int mosquitto_callback_unregister(mosquitto_plugin_id_t *identifier, int event,
		MOSQ_FUNC_generic_callback cb_func, const void *event_data);
const char *mosquitto_client_id(const struct mosquitto *client);
const char *mosquitto_client_username(const struct mosquitto *client);
int mosquitto_broker_publish_copy(const char *clientid, const char *topic, int payloadlen,
		const void *payload, int qos, bool retain, mosquitto_property *properties);

static mosquitto_plugin_id_t *plugin_id = NULL;

/* Writes text as a JSON string (with its quotes) at out; returns the bytes written. out must
 * hold 6 bytes per input byte plus 2. Mosquitto has checked that topics, client ids and
 * usernames are UTF-8, so only quotes, backslashes and control characters need escaping. */
static size_t json_string(char *out, const char *text)
{
	size_t n = 0;
	const unsigned char *c;

	out[n++] = '"';
	for(c = (const unsigned char *)(text ? text : ""); *c; c++){
		if(*c == '"' || *c == '\\'){
			out[n++] = '\\';
			out[n++] = (char)*c;
		}else if(*c < 0x20){
			n += (size_t)sprintf(out + n, "\\u%04x", *c);
		}else{
			out[n++] = (char)*c;
		}
	}
	out[n++] = '"';
	return n;
}

static int report(const struct mosquitto_evt_acl_check *ed)
{
	static const char hex[] = "0123456789abcdef";
	const char *client_id = mosquitto_client_id(ed->client);
	const char *username = mosquitto_client_username(ed->client);
	const char *topic = ed->topic ? ed->topic : "";
	uint32_t kept = ed->payloadlen < MAX_PAYLOAD ? ed->payloadlen : MAX_PAYLOAD;
	size_t size = 256 + 6 * (strlen(topic) + (client_id ? strlen(client_id) : 0)
			+ (username ? strlen(username) : 0)) + 2 * (size_t)kept;
	char *notice = malloc(size);
	size_t n = 0;
	uint32_t i;
	int rc;

	if(notice == NULL) return MOSQ_ERR_NOMEM;
	n += (size_t)sprintf(notice + n, "{\"access\":\"%s\",\"client_id\":",
			ed->access == MOSQ_ACL_WRITE ? "publish" : "subscribe");
	n += json_string(notice + n, client_id);
	n += (size_t)sprintf(notice + n, ",\"username\":");
	if(username){
		n += json_string(notice + n, username);
	}else{
		n += (size_t)sprintf(notice + n, "null");
	}
	n += (size_t)sprintf(notice + n, ",\"topic\":");
	n += json_string(notice + n, topic);
	n += (size_t)sprintf(notice + n, ",\"qos\":%d,\"retain\":%s,\"payload_bytes\":%u,"
			"\"payload_hex\":\"", ed->qos, ed->retain ? "true" : "false", ed->payloadlen);
	for(i = 0; i < kept; i++){
		uint8_t byte = ((const uint8_t *)ed->payload)[i];
		notice[n++] = hex[byte >> 4];
		notice[n++] = hex[byte & 0x0f];
	}
	n += (size_t)sprintf(notice + n, "\"}");
	rc = mosquitto_broker_publish_copy(NULL, REFUSALS_TOPIC, (int)n, notice, 1, false, NULL);
	free(notice);
	return rc;
}

static int on_acl_check(int event, void *event_data, void *userdata)
{
	const struct mosquitto_evt_acl_check *ed = event_data;

	(void)event;
	(void)userdata;
	if(ed->access == MOSQ_ACL_WRITE || ed->access == MOSQ_ACL_SUBSCRIBE){
		/* A notice that cannot be queued (out of memory) changes nothing about the refusal. */
		report(ed);
	}
	return MOSQ_ERR_PLUGIN_DEFER;
}

int mosquitto_plugin_version(int supported_version_count, const int *supported_versions)
{
	int i;

	for(i = 0; i < supported_version_count; i++){
		if(supported_versions[i] == 5) return 5;
	}
	return -1;
}

int mosquitto_plugin_init(mosquitto_plugin_id_t *identifier, void **userdata,
		struct mosquitto_opt *options, int option_count)
{
	(void)userdata;
	(void)options;
	(void)option_count;
	plugin_id = identifier;
	return mosquitto_callback_register(plugin_id, MOSQ_EVT_ACL_CHECK, on_acl_check, NULL, NULL);
}

int mosquitto_plugin_cleanup(void *userdata, struct mosquitto_opt *options, int option_count)
{
	(void)userdata;
	(void)options;
	(void)option_count;
	return mosquitto_callback_unregister(plugin_id, MOSQ_EVT_ACL_CHECK, on_acl_check, NULL);
}
