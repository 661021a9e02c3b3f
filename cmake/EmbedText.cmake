# Writes OUTPUT: a C++ file whose FUNCTION returns the text of INPUT, so a
# real header (the device prelude, the emulator's shim) ships inside the
# library. Run at build time (kvq_embed_text in the top-level CMakeLists).
file(READ "${INPUT}" text)
string(FIND "${text}" ")kvqembed" clash)
if(NOT clash EQUAL -1)
  message(FATAL_ERROR "${INPUT} contains the raw-string delimiter )kvqembed")
endif()
set(content "// Generated from ${INPUT} by cmake/EmbedText.cmake: edit that file.\n#include \"${INCLUDE}\"\n\nconst char *${FUNCTION}() {\n  return R\"kvqembed(${text})kvqembed\";\n}\n")
include("${CMAKE_CURRENT_LIST_DIR}/WriteIfChanged.cmake")
write_if_changed("${OUTPUT}" "${content}")
