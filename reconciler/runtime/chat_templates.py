"""The built-in chat templates a BaseModel names with `chatTemplate:`, as Jinja text.

Each one is written here to render a conversation of system, user and assistant messages exactly
as its model family's own template does (the `chat_template` in the model's tokenizer_config.json
or chat_template.jinja on the Hugging Face Hub, named beside it): the same special tokens,
whitespace and system-message placement, so a model fine-tuned with a named template sees the
format it was instruction-tuned on. Tool calls and images, which the runtime never passes, are
left out. Plain strings, no imports: the spec layer lists the names (specs/basemodel.py), and the
runtime resolves them here (loading.py).
"""

from __future__ import annotations

# ChatML, the format Qwen, Phi-4 and many fine-tunes build on; no default system message.
CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# meta-llama/Meta-Llama-3-8B-Instruct (also Llama 3.1/3.2 without their date header): one
# header per message, contents trimmed, the bos token before the first.
LLAMA3 = (
    "{% for message in messages %}"
    "{% if loop.first %}{{ bos_token }}{% endif %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim "
    "+ '<|eot_id|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)

# Qwen/Qwen2.5-*-Instruct: ChatML with Qwen's default system message when the conversation has none.
QWEN2_5 = (
    "{%- if messages and messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant."
    "<|im_end|>\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if message['role'] != 'system' or not loop.first %}"
    "{{- '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}"
)


def _qwen3(generation_prompt_thinks: bool) -> str:
    """Qwen/Qwen3-* (the hybrid thinking models): ChatML; an assistant turn after the last user
    query carries its reasoning in a <think> block (an empty one when it is the last message),
    earlier turns lose theirs. `enable_thinking=False` adds an empty think block to the
    generation prompt; the no-thinking variant always does."""
    empty_think = "{{- '<think>\n\n</think>\n\n' }}"
    generation = (
        "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}"
        + ("{%- if enable_thinking is defined and enable_thinking is false %}" + empty_think
           + "{%- endif %}" if generation_prompt_thinks else empty_think)
        + "{%- endif %}"
    )
    return (
        "{%- if messages and messages[0]['role'] == 'system' %}"
        "{{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}"
        "{%- endif %}"
        "{%- set ns = namespace(last_query=messages|length - 1) %}"
        "{%- for message in messages %}"
        "{%- if message['role'] == 'user' and not (message['content'].startswith('<tool_response>') "
        "and message['content'].endswith('</tool_response>')) %}"
        "{%- set ns.last_query = loop.index0 %}"
        "{%- endif %}"
        "{%- endfor %}"
        "{%- for message in messages %}"
        "{%- set content = message['content'] if message['content'] is string else '' %}"
        "{%- if message['role'] == 'assistant' %}"
        "{%- set reasoning = '' %}"
        "{%- if message['reasoning_content'] is string %}"
        "{%- set reasoning = message['reasoning_content'] %}"
        "{%- elif '</think>' in content %}"
        "{%- set reasoning = content.split('</think>')[0].rstrip('\n').split('<think>')[-1].lstrip('\n') %}"
        "{%- set content = content.split('</think>')[-1].lstrip('\n') %}"
        "{%- endif %}"
        "{%- if loop.index0 > ns.last_query and (loop.last or reasoning) %}"
        "{{- '<|im_start|>assistant\n<think>\n' + reasoning.strip('\n') + '\n</think>\n\n' "
        "+ content.lstrip('\n') }}"
        "{%- else %}"
        "{{- '<|im_start|>assistant\n' + content }}"
        "{%- endif %}"
        "{{- '<|im_end|>\n' }}"
        "{%- elif message['role'] != 'system' or not loop.first %}"
        "{{- '<|im_start|>' + message['role'] + '\n' + content + '<|im_end|>\n' }}"
        "{%- endif %}"
        "{%- endfor %}"
        + generation
    )


QWEN3 = _qwen3(generation_prompt_thinks=True)
QWEN3_NO_THINKING = _qwen3(generation_prompt_thinks=False)

# mistralai/Mistral-7B-Instruct-v0.3 (tokenizer v3): `<s>[INST] user[/INST] reply</s>`, roles
# alternating after an optional system message, which goes before the last user message as
# mistral-common encodes it. (The Hub template of v0.3 puts it there only when that message ends
# the conversation, so a training rendering, which ends with a reply, would lose it.)
MISTRAL = (
    "{%- if messages and messages[0]['role'] == 'system' %}"
    "{%- set system_message = messages[0]['content'] %}"
    "{%- set loop_messages = messages[1:] %}"
    "{%- else %}"
    "{%- set loop_messages = messages %}"
    "{%- endif %}"
    "{%- set ns = namespace(last_user=-1) %}"
    "{%- for message in loop_messages %}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{- raise_exception('After the optional system message, conversation roles must alternate "
    "user/assistant/user/assistant/...') }}"
    "{%- endif %}"
    "{%- if message['role'] == 'user' %}{%- set ns.last_user = loop.index0 %}{%- endif %}"
    "{%- endfor %}"
    "{{- bos_token }}"
    "{%- for message in loop_messages %}"
    "{%- if message['role'] == 'user' %}"
    "{%- if system_message is defined and loop.index0 == ns.last_user %}"
    "{{- '[INST] ' + system_message + '\n\n' + message['content'] + '[/INST]' }}"
    "{%- else %}"
    "{{- '[INST] ' + message['content'] + '[/INST]' }}"
    "{%- endif %}"
    "{%- else %}"
    "{{- ' ' + message['content'] | trim + eos_token }}"
    "{%- endif %}"
    "{%- endfor %}"
)

# google/gemma-3-*-it: `model` for the assistant, contents trimmed, a system message written
# at the start of the first user turn, roles alternating.
GEMMA = (
    "{{- bos_token }}"
    "{%- if messages and messages[0]['role'] == 'system' %}"
    "{%- set first_user_prefix = messages[0]['content'] + '\n\n' %}"
    "{%- set loop_messages = messages[1:] %}"
    "{%- else %}"
    "{%- set first_user_prefix = '' %}"
    "{%- set loop_messages = messages %}"
    "{%- endif %}"
    "{%- for message in loop_messages %}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{- raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{%- endif %}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{{- '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') "
    "+ message['content'] | trim + '<end_of_turn>\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<start_of_turn>model\n' }}{%- endif %}"
)

# microsoft/Phi-3.5-mini-instruct (and Phi-3-mini-4k-instruct since its July 2024 update): an empty
# system message is left out; a conversation without a generation prompt ends with the eos token.
PHI3 = (
    "{%- for message in messages %}"
    "{%- if message['role'] == 'system' and message['content'] %}"
    "{{- '<|system|>\n' + message['content'] + '<|end|>\n' }}"
    "{%- elif message['role'] == 'user' %}"
    "{{- '<|user|>\n' + message['content'] + '<|end|>\n' }}"
    "{%- elif message['role'] == 'assistant' %}"
    "{{- '<|assistant|>\n' + message['content'] + '<|end|>\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|assistant|>\n' }}{%- else %}{{- eos_token }}{%- endif %}"
)

# microsoft/phi-4: ChatML with <|im_sep|> after the role and no newlines between messages.
PHI4 = (
    "{%- for message in messages %}"
    "{%- if message['role'] in ('system', 'user', 'assistant') %}"
    "{{- '<|im_start|>' + message['role'] + '<|im_sep|>' + message['content'] + '<|im_end|>' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant<|im_sep|>' }}{%- endif %}"
)

TEMPLATES: dict[str, str] = {
    "chatml": CHATML,
    "llama3": LLAMA3,
    "qwen2.5": QWEN2_5,
    "qwen3": QWEN3,
    "qwen3-no-thinking": QWEN3_NO_THINKING,
    "mistral": MISTRAL,
    "gemma": GEMMA,
    "phi3": PHI3,
    "phi4": PHI4,
}
"""`chatTemplate:` name -> Jinja text; specs/basemodel.py lists the same names."""

END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<|end_of_text|>", "<end_of_turn>", "<|end|>")
"""Tokens that end an assistant turn in these formats (besides the tokenizer's eos): generation
stops at whichever of them the vocabulary has."""
